import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InputError } from '../src/errors.js';
import * as T from '../src/tensor/index.js';
import { Rng, type Tensor } from '../src/tensor/index.js';
import { applyXPos, XPosTableCache, xposMaxLength, xposMaxOffset, xposTables, xposZeta } from '../src/model/xpos.js';
import { randomArray } from './support/gradcheck.js';

const D = 8;
const SCALE_BASE = 16; // small, so that the decay is visible over short distances
const f64 = { dtype: 'float64', device: 'cpu' } as const;

/** q placed at position m and k at n (each a single-token [1, 1, 1, D] tensor), after XPos with center c. */
function score(q: Float64Array, k: Float64Array, m: number, n: number, center: number, scaleBase = SCALE_BASE): number {
  return T.tidy(() => {
    const one = (data: Float64Array): Tensor => T.tensor(data, [1, 1, 1, D], { dtype: 'float64' });
    const qm = applyXPos(one(q), one(q), xposTables(D, scaleBase, m, 1, center, f64)).q;
    const kn = applyXPos(one(k), one(k), xposTables(D, scaleBase, n, 1, center, f64)).k;
    return T.sum(T.mul(qm, kn)).item();
  });
}

test('XPos: q.k depends only on the relative distance, for any center', () => {
  const rng = new Rng(3);
  for (let trial = 0; trial < 5; trial++) {
    const q = randomArray(D, rng);
    const k = randomArray(D, rng);
    const m = rng.int(200);
    const n = rng.int(200);
    const reference = score(q, k, m, n, 0);
    for (const [shift, center] of [[0, 100], [37, 0], [1000, 1037], [-Math.min(m, n), 5]] as const) {
      const got = score(q, k, m + shift, n + shift, center);
      assert.ok(Math.abs(got - reference) <= 1e-11 * Math.max(1, Math.abs(reference)), `shift ${shift} center ${center}: ${got} vs ${reference}`);
    }
  }
});

test('XPos: pair i rotates by distance * 10000^(-2i/D) and decays by zeta_i^(distance/scaleBase)', () => {
  const zeta = xposZeta(D);
  assert.deepEqual([...zeta].map((z) => +z.toFixed(12)), [0.4 / 1.4, (0.25 + 0.4) / 1.4, (0.5 + 0.4) / 1.4, (0.75 + 0.4) / 1.4].map((z) => +z.toFixed(12)));
  for (let i = 0; i < D / 2; i++) {
    const theta = Math.pow(10000, (-2 * i) / D);
    const unit = (j: number): Float64Array => { const a = new Float64Array(D); a[j] = 1; return a; };
    for (const [m, n] of [[10, 3], [40, 40], [25, 0], [3, 10]] as const) {
      const decay = Math.pow(zeta[i]!, (m - n) / SCALE_BASE);
      const a = unit(2 * i);
      const b = unit(2 * i + 1);
      // (cos, sin) of the relative angle, scaled by the decay
      assert.ok(Math.abs(score(a, a, m, n, 7) - Math.cos((m - n) * theta) * decay) < 1e-12, `cos i=${i} ${m},${n}`);
      assert.ok(Math.abs(score(a, b, m, n, 7) - Math.sin((m - n) * theta) * decay) < 1e-12, `sin i=${i} ${m},${n}`);
      assert.ok(Math.abs(score(b, b, m, n, 7) - Math.cos((m - n) * theta) * decay) < 1e-12);
    }
    // the decay shrinks with distance for a query after its key (zeta < 1)
    assert.ok(zeta[i]! < 1);
  }
});

test('XPos: the float32 bound is documented and enforced', () => {
  const maxOffset = xposMaxOffset(512);
  assert.equal(maxOffset, 28328);
  assert.equal(xposMaxLength(512), 56657);
  assert.equal(xposMaxOffset(1024), 56657);
  // at the bound, float32 factors are finite and normal
  const edge = xposTables(D, 512, 0, 1, maxOffset, { dtype: 'float32', device: 'cpu' });
  for (const t of [edge.qCos, edge.kCos]) {
    for (const v of t.toArray()) assert.ok(Number.isFinite(v) && Math.abs(v) > 1e-37, `factor ${v}`);
  }
  assert.throws(() => xposTables(D, 512, 0, 1, maxOffset + 1, f64), (e: unknown) => e instanceof InputError && /float32-safe/.test(e.message));
  assert.throws(() => xposTables(7, 512, 0, 1, 0, f64), /even/);
});

test('XPos: the table cache hands out views that outlive a change of positions and the cache itself', () => {
  const cache = new XPosTableCache(D, SCALE_BASE, f64);
  const fresh = (start: number, length: number, center: number): number[] => Array.from(xposTables(D, SCALE_BASE, start, length, center, f64).kCos.toArray());
  const first = cache.get(0, 10, 5);
  const again = cache.get(0, 10, 5);
  assert.notEqual(first.kCos, again.kCos, 'each call hands out views of its own');
  assert.deepEqual(Array.from(again.kCos.toArray()), fresh(0, 10, 5));
  again.kCos.dispose();
  assert.deepEqual(Array.from(first.kCos.toArray()), fresh(0, 10, 5), 'disposing a view leaves the others');
  // other positions replace the kept tables; views of the old ones still read their values
  const other = cache.get(3, 4, 0);
  assert.deepEqual(Array.from(other.kCos.toArray()), fresh(3, 4, 0));
  assert.deepEqual(Array.from(first.qSin.toArray()), Array.from(xposTables(D, SCALE_BASE, 0, 10, 5, f64).qSin.toArray()));
  cache.dispose();
  assert.deepEqual(Array.from(other.kCos.toArray()), fresh(3, 4, 0), 'views outlive the cache');
  assert.equal(other.kCos.isDisposed, false);
});
