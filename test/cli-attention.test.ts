import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  fromFloat32, getTensor, readSafetensors, toFloat32, toFloat64, writeSafetensors,
  type StoredTensor,
} from '../src/io/safetensors.js';
import { dilatedAttention } from '../src/attention/dilated.js';
import { Tensor } from '../src/tensor/index.js';
import { runCli as cli, ROOT, type CliResult as Result } from './support/cli.js';

/** Runs a script that drives the CLI frame with a made-up command table. */
function frame(script: string, env: Record<string, string> = {}): Promise<Result> {
  return new Promise((done) => {
    execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: ROOT, env: { ...process.env, ...env } },
      (err, stdout, stderr) => done({ code: err === null ? 0 : Number(err.code), stdout, stderr }));
  });
}

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 2 ** 32;
  };
}

function randomArray(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => 2 * r() - 1);
}

type Shape4 = [number, number, number, number];

interface Case { shape: Shape4; q: Float32Array; k: Float32Array; v: Float32Array; dO: Float32Array }

function makeCase(shape: Shape4, seed: number): Case {
  const n = shape.reduce((a, b) => a * b, 1);
  return {
    shape, q: randomArray(n, seed), k: randomArray(n, seed + 1), v: randomArray(n, seed + 2), dO: randomArray(n, seed + 3),
  };
}

function writeCase(path: string, c: Case, withDo = true, dtype: 'F32' | 'F16' | 'BF16' = 'F32'): void {
  const t: Record<string, StoredTensor> = {
    q: fromFloat32(c.q, c.shape, dtype), k: fromFloat32(c.k, c.shape, dtype), v: fromFloat32(c.v, c.shape, dtype),
  };
  if (withDo) t['do'] = fromFloat32(c.dO, c.shape, dtype);
  writeSafetensors(path, t);
}

/** Dense softmax attention and its gradients in float64, straight from the definitions. */
function naiveDense(c: Case, causal: boolean, scale: number) {
  const [B, N, H, D] = c.shape;
  const at = (b: number, n: number, h: number) => ((b * N + n) * H + h) * D;
  const size = B * N * H * D;
  const o = new Float64Array(size); const lse = new Float64Array(B * N * H);
  const dq = new Float64Array(size); const dk = new Float64Array(size); const dv = new Float64Array(size);
  const dot = (x: Float32Array, i: number, y: Float32Array | Float64Array, j: number) => {
    let s = 0;
    for (let d = 0; d < D; d++) s += x[i + d]! * y[j + d]!;
    return s;
  };
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < N; i++) {
        const last = causal ? i : N - 1;
        const z = Array.from({ length: last + 1 }, (_, j) => scale * dot(c.q, at(b, i, h), c.k, at(b, j, h)));
        const m = Math.max(...z);
        const l = m + Math.log(z.reduce((s, x) => s + Math.exp(x - m), 0));
        lse[(b * N + i) * H + h] = l;
        const p = z.map((x) => Math.exp(x - l));
        const oi = at(b, i, h);
        for (let j = 0; j <= last; j++) for (let d = 0; d < D; d++) o[oi + d] += p[j]! * c.v[at(b, j, h) + d]!;
        const rowDot = dot(c.dO, oi, o, oi); // sum_j p_j (do . v_j) = do . o
        for (let j = 0; j <= last; j++) {
          const kj = at(b, j, h);
          const ds = p[j]! * (dot(c.dO, oi, c.v, kj) - rowDot);
          for (let d = 0; d < D; d++) {
            dv[kj + d] += p[j]! * c.dO[oi + d]!;
            dq[oi + d] += scale * ds * c.k[kj + d]!;
            dk[kj + d] += scale * ds * c.q[oi + d]!;
          }
        }
      }
    }
  }
  return { o, lse, dq, dk, dv };
}

/** The operator called in this process on the same float32 inputs. */
function inProcess(c: Case, options: Parameters<typeof dilatedAttention>[3]) {
  const q = Tensor.fromArray(c.q, c.shape, { requiresGrad: true });
  const k = Tensor.fromArray(c.k, c.shape, { requiresGrad: true });
  const v = Tensor.fromArray(c.v, c.shape, { requiresGrad: true });
  const { output, lse } = dilatedAttention(q, k, v, options);
  output.backward(Tensor.fromArray(c.dO, c.shape));
  return { o: output.toArray(), lse: lse.toArray(), dq: q.grad!.toArray(), dk: k.grad!.toArray(), dv: v.grad!.toArray() };
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!; const e = expected[i]!;
    if (a === e) continue; // also covers matching infinities
    assert.ok(Math.abs(a - e) <= tol * (1 + Math.abs(e)), `${what}[${i}]: ${a} vs ${e}`);
  }
}

let dir: string;
before(() => { dir = mkdtempSync(join(tmpdir(), 'longnet-cli-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

describe('longnet attention: results', { concurrency: 4 }, () => {
  for (const causal of [false, true]) {
    it(`one pattern (N, 1) is dense attention${causal ? ', causal' : ''}: CLI = operator = naive`, async () => {
      const c = makeCase([2, 13, 3, 4], causal ? 10 : 20);
      const input = join(dir, `dense-${causal}.safetensors`);
      const output = join(dir, `dense-${causal}.out.safetensors`);
      writeCase(input, c);
      const res = await cli(['attention', '--in', input, '--out', output, '--segments', '13', '--dilations', '1',
        ...(causal ? ['--causal'] : [])]);
      assert.equal(res.code, 0, res.stderr);
      assert.equal(res.stderr, '');
      const file = readSafetensors(output);
      assert.deepEqual([...file.tensors.keys()].sort(), ['dk', 'dq', 'dv', 'lse', 'o']);
      for (const name of ['o', 'dq', 'dk', 'dv']) {
        assert.equal(getTensor(file, name).dtype, 'F32');
        assert.deepEqual(getTensor(file, name).shape, [2, 13, 3, 4]);
      }
      assert.deepEqual(getTensor(file, 'lse').shape, [2, 13, 3]);
      assert.equal(file.metadata['causal'], String(causal));
      assert.equal(file.metadata['scale'], String(0.5));

      const naive = naiveDense(c, causal, 0.5);
      const direct = inProcess(c, { segmentLengths: [13], dilationRates: [1], causal });
      for (const name of ['o', 'lse', 'dq', 'dk', 'dv'] as const) {
        const got = toFloat32(getTensor(file, name));
        assertClose(got, direct[name], 1e-6, `${name} vs operator`);
        assertClose(got, naive[name], 2e-5, `${name} vs naive`);
      }
    });
  }

  it('--float64 computes and writes float64, matching the naive float64 computation closely', async () => {
    const c = makeCase([1, 9, 2, 5], 30);
    const input = join(dir, 'f64.safetensors');
    const output = join(dir, 'f64.out.safetensors');
    writeCase(input, c);
    const res = await cli(['attention', '--in', input, '--out', output, '--segments', '9', '--dilations', '1',
      '--causal', '--float64', '--scale', '0.7']);
    assert.equal(res.code, 0, res.stderr);
    const file = readSafetensors(output);
    const naive = naiveDense(c, true, 0.7);
    for (const name of ['o', 'lse', 'dq', 'dk', 'dv'] as const) {
      assert.equal(getTensor(file, name).dtype, 'F64');
      assertClose(toFloat64(getTensor(file, name)), naive[name], 1e-12, name);
    }
    assert.equal(file.metadata['precision'], 'float64');
  });

  it('several patterns, blocked offsets, custom scale: CLI = operator', async () => {
    const c = makeCase([2, 19, 4, 3], 40);
    const input = join(dir, 'multi.safetensors');
    const output = join(dir, 'multi.out.safetensors');
    writeCase(input, c);
    const res = await cli(['attention', '--in', input, '--out', output, '--segments', '4,8,16', '--dilations', '1,2,4',
      '--causal', '--head-offsets', 'blocked', '--scale', '0.3']);
    assert.equal(res.code, 0, res.stderr);
    const file = readSafetensors(output);
    const direct = inProcess(c, { segmentLengths: [4, 8, 16], dilationRates: [1, 2, 4], causal: true, headOffsets: 'blocked', scale: 0.3 });
    for (const name of ['o', 'lse', 'dq', 'dk', 'dv'] as const) assertClose(toFloat32(getTensor(file, name)), direct[name], 1e-6, name);
    assert.equal(file.metadata['head_offsets'], 'blocked');
  });

  it('rows no pattern selects get o = 0 and lse = -inf; without do only o and lse are written', async () => {
    const c = makeCase([1, 8, 1, 2], 50);
    const input = join(dir, 'sparse.safetensors');
    const output = join(dir, 'sparse.out.safetensors');
    writeCase(input, c, false);
    const res = await cli(['attention', '--in', input, '--out', output, '--segments', '8', '--dilations', '2']);
    assert.equal(res.code, 0, res.stderr);
    const file = readSafetensors(output);
    assert.deepEqual([...file.tensors.keys()].sort(), ['lse', 'o']);
    const lse = toFloat32(getTensor(file, 'lse'));
    const o = toFloat32(getTensor(file, 'o'));
    for (let p = 0; p < 8; p++) {
      if (p % 2 === 0) assert.ok(Number.isFinite(lse[p]!), `lse[${p}]`);
      else {
        assert.equal(lse[p], -Infinity);
        assert.deepEqual([...o.subarray(2 * p, 2 * p + 2)], [0, 0]);
      }
    }
  });

  it('accepts BF16 and F16 inputs, converted exactly', async () => {
    for (const dtype of ['BF16', 'F16'] as const) {
      const c = makeCase([1, 6, 2, 4], 60);
      const input = join(dir, `${dtype}.safetensors`);
      const output = join(dir, `${dtype}.out.safetensors`);
      writeCase(input, c, true, dtype);
      const res = await cli(['attention', '--in', input, '--out', output, '--segments', '3,6', '--dilations', '1,2']);
      assert.equal(res.code, 0, res.stderr);
      const read = readSafetensors(input);
      const rounded: Case = {
        shape: c.shape, q: toFloat32(getTensor(read, 'q')), k: toFloat32(getTensor(read, 'k')),
        v: toFloat32(getTensor(read, 'v')), dO: toFloat32(getTensor(read, 'do')),
      };
      const direct = inProcess(rounded, { segmentLengths: [3, 6], dilationRates: [1, 2] });
      const file = readSafetensors(output);
      for (const name of ['o', 'lse', 'dq', 'dk', 'dv'] as const) assertClose(toFloat32(getTensor(file, name)), direct[name], 1e-6, `${dtype} ${name}`);
    }
  });
});

interface ErrorCase {
  name: string;
  /** Extra tensors or overrides written to IN; null removes a tensor. */
  tensors?: Record<string, StoredTensor | null>;
  /** Raw bytes for IN instead of a safetensors file. */
  raw?: Uint8Array;
  /** Arguments; IN and OUT are substituted. */
  args: string[];
  /** The line on stderr must match. */
  expect: RegExp;
}

const SHAPE: Shape4 = [1, 4, 2, 3];
const base = makeCase(SHAPE, 70);
const f32 = (shape: number[]) => fromFloat32(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
const standard = ['--segments', '4', '--dilations', '1'];
const withNaN = (() => { const q = base.q.slice(); q[7] = NaN; return fromFloat32(q, SHAPE); })();

const ERROR_CASES: ErrorCase[] = [
  { name: 'missing tensor', tensors: { v: null }, args: standard, expect: /no tensor named "v"; it holds "(do|k|q)", "(do|k|q)", "(do|k|q)"/ },
  { name: 'mismatched shapes', tensors: { k: f32([1, 5, 2, 3]) }, args: standard, expect: /tensor "k" has shape \[1, 5, 2, 3\] but "q" has \[1, 4, 2, 3\]/ },
  { name: 'do of another shape', tensors: { do: f32([1, 4, 2, 2]) }, args: standard, expect: /tensor "do" has shape \[1, 4, 2, 2\]/ },
  { name: 'non-4-D tensor', tensors: { q: f32([4, 2, 3]) }, args: standard, expect: /tensor "q" has shape \[4, 2, 3\]; expected 4 dimensions/ },
  { name: 'integer tensor', tensors: { q: { dtype: 'I32', shape: SHAPE, data: new Uint8Array(96) } }, args: standard, expect: /tensor "q" is I32; expected a float dtype/ },
  { name: 'NaN in q', tensors: { q: withNaN }, args: standard, expect: /tensor "q" holds NaN at \[0, 1, 0, 1\]/ },
  { name: 'non-integer segment', args: ['--segments', '4,x', '--dilations', '1,1'], expect: /--segments: "x" is not a positive integer/ },
  { name: 'fractional dilation', args: ['--segments', '4', '--dilations', '1.5'], expect: /--dilations: "1.5" is not a positive integer/ },
  { name: 'zero segment', args: ['--segments', '0', '--dilations', '1'], expect: /--segments: "0" is not a positive integer/ },
  { name: 'negative dilation', args: ['--segments', '4', '--dilations=-1'], expect: /--dilations: "-1" is not a positive integer/ },
  { name: 'different lengths', args: ['--segments', '4,8', '--dilations', '1'], expect: /--segments has 2 entries but --dilations has 1/ },
  { name: 'r > w', args: ['--segments', '4,2', '--dilations', '1,4'], expect: /pattern 2: dilation 4 is larger than its segment length 2/ },
  { name: 'empty list', args: ['--segments', '', '--dilations', '1'], expect: /--segments: empty list/ },
  { name: 'bad scale', args: [...standard, '--scale', 'abc'], expect: /--scale: "abc" is not a finite number/ },
  { name: 'infinite scale', args: [...standard, '--scale', 'Infinity'], expect: /--scale: "Infinity" is not a finite number/ },
  { name: 'bad head offsets', args: [...standard, '--head-offsets', 'mod'], expect: /--head-offsets: "mod" is not one of paper, blocked/ },
  { name: 'unknown flag', args: [...standard, '--window', '3'], expect: /unknown flag --window/ },
  { name: 'flag without value', args: ['--segments', '4', '--dilations'], expect: /--dilations needs a value/ },
  { name: 'missing flag', args: ['--segments', '4'], expect: /missing --dilations LIST/ },
  { name: 'corrupt file', raw: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]), args: standard, expect: /header length \d+ runs past the end of the file \(11 bytes\)/ },
  { name: 'not JSON', raw: (() => { const b = new Uint8Array(12); b[0] = 4; b.set([110, 111, 112, 101], 8); return b; })(), args: standard, expect: /not valid JSON/ },
  { name: 'missing file', args: [...standard, '--in', 'NOFILE'], expect: /cannot read .*nope\.safetensors: no such file/ },
  { name: 'unwritable output', args: [...standard, '--out', 'NODIR'], expect: /cannot write .*missing-dir\/out\.safetensors: no such directory/ },
];

describe('longnet attention: bad input exits 2 with one line and writes nothing', { concurrency: 8 }, () => {
  ERROR_CASES.forEach((c, index) => {
    it(c.name, async () => {
      const caseDir = mkdtempSync(join(dir, 'err-'));
      const input = join(caseDir, 'in.safetensors');
      const output = join(caseDir, 'out.safetensors');
      if (c.raw !== undefined) writeFileSync(input, c.raw);
      else {
        const t: Record<string, StoredTensor> = {
          q: fromFloat32(base.q, SHAPE), k: fromFloat32(base.k, SHAPE), v: fromFloat32(base.v, SHAPE), do: fromFloat32(base.dO, SHAPE),
        };
        for (const [name, value] of Object.entries(c.tensors ?? {})) {
          if (value === null) delete t[name];
          else t[name] = value;
        }
        writeSafetensors(input, t);
      }
      // Every other case starts with an existing output file that must survive untouched.
      const existing = index % 2 === 0;
      if (existing) writeFileSync(output, 'previous output');
      const before = readdirSync(caseDir).sort();
      const args = c.args.map((a) => a === 'NOFILE' ? join(caseDir, 'nope.safetensors') : a === 'NODIR' ? join(caseDir, 'missing-dir', 'out.safetensors') : a);
      const res = await cli(['attention', '--in', input, '--out', output, ...args]);
      assert.equal(res.code, 2, `exit code; stderr: ${res.stderr}`);
      assert.equal(res.stdout, '');
      const lines = res.stderr.split('\n').filter((l) => l !== '');
      assert.equal(lines.length, 1, `one line expected:\n${res.stderr}`);
      assert.ok(res.stderr.endsWith('\n'));
      assert.match(lines[0]!, /^longnet attention: /);
      assert.match(lines[0]!, c.expect);
      assert.doesNotMatch(res.stderr, /\n\s+at |Error:/);
      assert.deepEqual(readdirSync(caseDir).sort(), before, 'no file created or removed');
      if (existing) assert.equal(readFileSync(output, 'utf8'), 'previous output');
    });
  });
});

describe('longnet frame', { concurrency: 4 }, () => {
  it('--help, <cmd> --help and --version exit 0 on stdout', async () => {
    const top = await cli(['--help']);
    assert.equal(top.code, 0);
    assert.match(top.stdout, /Usage: longnet <command>/);
    assert.match(top.stdout, /attention/);
    const sub = await cli(['attention', '--help']);
    assert.equal(sub.code, 0);
    assert.match(sub.stdout, /--segments LIST/);
    assert.match(sub.stdout, /--head-offsets paper\|blocked/);
    const version = await cli(['--version']);
    assert.equal(version.code, 0);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(version.stdout.trim(), pkg.version);
  });

  it('unknown or missing command: exit 2, one line', async () => {
    for (const args of [['nonsense'], [], ['--frobnicate']]) {
      const res = await cli(args);
      assert.equal(res.code, 2);
      assert.equal(res.stderr.split('\n').filter((l) => l !== '').length, 1, res.stderr);
      assert.match(res.stderr, /^longnet: /);
    }
  });

  const boom = (message: string) => `
    import { runCli } from './src/cli/frame.ts';
    await runCli(['boom'], { boom: { summary: 'fails', load: async () => ({ command: {
      name: 'boom', summary: 'fails', flags: {}, run() { throw new TypeError(${JSON.stringify(message)}); } } }) } });`;

  it('an internal error exits 1 with one line; LONGNET_DEBUG=1 adds the stack', async () => {
    const res = await frame(boom('x is undefined\nsecond line'));
    assert.equal(res.code, 1);
    const lines = res.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, res.stderr);
    assert.match(lines[0]!, /^longnet boom: internal error: x is undefined second line/);
    const debug = await frame(boom('kaput'), { LONGNET_DEBUG: '1' });
    assert.equal(debug.code, 1);
    assert.match(debug.stderr, /^longnet boom: internal error: kaput\n/);
    assert.match(debug.stderr, /\n\s+at /);
  });
});
