import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { vizSvg, type VizOptions } from '../src/cli/viz.js';
import { runCli as cli } from './support/cli.js';

let work: string;
before(() => {
  work = mkdtempSync(join(tmpdir(), 'longnet-cli-viz-'));
});
after(() => rmSync(work, { recursive: true, force: true }));

interface Cell { row: string; col: string; query: number; key: number; count: number }

/** Every drawn cell of an SVG from `longnet viz`. */
function cells(svg: string): Cell[] {
  const out: Cell[] = [];
  for (const m of svg.matchAll(/<rect class="cell"[^>]*data-row="([^"]+)" data-col="([^"]+)" data-query="(\d+)" data-key="(\d+)" data-count="(\d+)"\/>/g)) {
    out.push({ row: m[1]!, col: m[2]!, query: Number(m[3]), key: Number(m[4]), count: Number(m[5]) });
  }
  return out;
}

/**
 * The selection rule of docs/ATTENTION.md, written out independently: w' = min(w, N); segment s covers
 * [s w', min((s+1) w', N)); head h keeps the positions p of the segment with (p - s w') mod r == h mod r
 * (paper offsets); a kept query sees the kept keys of its segment (p' <= p when causal).
 */
function sees(n: number, w: number, r: number, h: number, q: number, k: number, causal: boolean): boolean {
  const seg = Math.min(w, n);
  const s = Math.floor(q / seg);
  if (Math.floor(k / seg) !== s) return false;
  const o = h % r;
  if ((q - s * seg) % r !== o || (k - s * seg) % r !== o) return false;
  return !causal || k <= q;
}

/** Expected cells of the whole figure, keyed "row/col/query/key" -> count. */
function expected(o: VizOptions): Map<string, number> {
  const map = new Map<string, number>();
  const bump = (key: string, by = 1): void => { map.set(key, (map.get(key) ?? 0) + by); };
  for (let h = 0; h < o.heads; h++) {
    for (let q = 0; q < o.seqLen; q++) {
      for (let k = 0; k < o.seqLen; k++) {
        o.segmentLengths.forEach((w, i) => {
          if (!sees(o.seqLen, w, o.dilationRates[i]!, h, q, k, o.causal)) return;
          bump(`${h}/${i}/${q}/${k}`);
          bump(`${h}/combined/${q}/${k}`);
          bump(`all/${i}/${q}/${k}`);
          bump(`all/combined/${q}/${k}`);
        });
      }
    }
  }
  return map;
}

function drawn(svg: string): Map<string, number> {
  const map = new Map<string, number>();
  for (const c of cells(svg)) {
    const key = `${c.row}/${c.col}/${c.query}/${c.key}`;
    assert.ok(!map.has(key), `cell ${key} drawn twice`);
    map.set(key, c.count);
  }
  return map;
}

test('the cells drawn are exactly the selection rule of docs/ATTENTION.md, per pattern, head, combined and over heads', () => {
  const cases: VizOptions[] = [
    { seqLen: 16, segmentLengths: [4, 8, 16], dilationRates: [1, 2, 4], heads: 4, causal: false, headOffsets: 'paper' },
    { seqLen: 16, segmentLengths: [4, 8, 16], dilationRates: [1, 2, 4], heads: 4, causal: true, headOffsets: 'paper' },
    // a last segment shorter than w, a segment longer than N (clipped), rates above the head count, two patterns that coincide
    { seqLen: 13, segmentLengths: [5, 32, 6, 6], dilationRates: [1, 3, 2, 2], heads: 2, causal: true, headOffsets: 'paper' },
    { seqLen: 7, segmentLengths: [7], dilationRates: [1], heads: 1, causal: false, headOffsets: 'paper' },
  ];
  for (const o of cases) {
    const svg = vizSvg(o);
    assert.deepEqual(new Map([...drawn(svg)].sort()), new Map([...expected(o)].sort()), JSON.stringify(o));
  }
});

test('known pictures: (N, 1) is the full square or its lower triangle; a dilated head sees its residue only', () => {
  const full = cells(vizSvg({ seqLen: 6, segmentLengths: [6], dilationRates: [1], heads: 1, causal: false, headOffsets: 'paper' }))
    .filter((c) => c.row === '0' && c.col === '0');
  assert.equal(full.length, 36);
  const lower = cells(vizSvg({ seqLen: 6, segmentLengths: [6], dilationRates: [1], heads: 1, causal: true, headOffsets: 'paper' }))
    .filter((c) => c.row === '0' && c.col === '0');
  assert.equal(lower.length, 21);
  assert.ok(lower.every((c) => c.key <= c.query));
  // w = 8, r = 2, head 1: the odd positions of each segment, 4 x 4 a segment
  const odd = cells(vizSvg({ seqLen: 16, segmentLengths: [8], dilationRates: [2], heads: 2, causal: false, headOffsets: 'paper' }))
    .filter((c) => c.row === '1' && c.col === '0');
  assert.equal(odd.length, 2 * 16);
  assert.ok(odd.every((c) => c.query % 2 === 1 && c.key % 2 === 1 && Math.floor(c.query / 8) === Math.floor(c.key / 8)));
  // two identical patterns: the combined view counts the key twice
  const twice = cells(vizSvg({ seqLen: 4, segmentLengths: [4, 4], dilationRates: [1, 1], heads: 1, causal: false, headOffsets: 'paper' }))
    .filter((c) => c.col === 'combined' && c.row === '0');
  assert.equal(twice.length, 16);
  assert.ok(twice.every((c) => c.count === 2));
});

test('blocked offsets: head h takes h // ceil(H / r)', () => {
  // H = 4, r = 2: heads 0, 1 take offset 0 and heads 2, 3 offset 1 (paper offsets would alternate)
  const svg = vizSvg({ seqLen: 8, segmentLengths: [8], dilationRates: [2], heads: 4, causal: false, headOffsets: 'blocked' });
  for (const c of cells(svg).filter((x) => x.row !== 'all' && x.col === '0')) {
    assert.equal(c.query % 2, Math.floor(Number(c.row) / 2), `head ${c.row} query ${c.query}`);
  }
});

test('longnet viz writes the SVG and reports what it drew', async () => {
  const out = join(work, 'fig.svg');
  const r = await cli(['viz', '--seq-len', '16', '--segments', '4,8,16', '--dilations', '1,2,4', '--heads', '4', '--causal', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /wrote .*fig\.svg: N = 16, 3 pattern\(s\) x 4 head\(s\)/);
  const svg = readFileSync(out, 'utf8');
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>\n$/);
  assert.match(svg, /pattern 2: w=16, r=4/);
  assert.match(svg, /combined \(multiset\)/);
  const o: VizOptions = { seqLen: 16, segmentLengths: [4, 8, 16], dilationRates: [1, 2, 4], heads: 4, causal: true, headOffsets: 'paper' };
  assert.deepEqual(new Map([...drawn(svg)].sort()), new Map([...expected(o)].sort()));
  const entries = Number(/(\d+) selected/.exec(r.stdout)![1]);
  assert.equal(entries, cells(svg).filter((c) => c.row !== 'all' && c.col !== 'combined').length);
});

test('bad input: one line on stderr, exit 2, no stack, and no file written', async () => {
  const out = join(work, 'bad.svg');
  const cases: [string[], RegExp][] = [
    [['--seq-len', '16', '--segments', '4,8', '--dilations', '1', '--out', out], /--segments has 2 entries but --dilations has 1/],
    [['--seq-len', '16', '--segments', '4', '--dilations', '8', '--out', out], /dilation 8 is larger than its segment length 4/],
    [['--seq-len', '0', '--segments', '4', '--dilations', '1', '--out', out], /--seq-len: "0" is not a positive integer/],
    [['--seq-len', '100000', '--segments', '4', '--dilations', '1', '--out', out], /too long to draw/],
    [['--seq-len', '16', '--segments', '4,x', '--dilations', '1,1', '--out', out], /--segments: "x" is not a positive integer/],
    [['--seq-len', '16', '--segments', '4', '--dilations', '1', '--heads', '-2', '--out', out], /--heads/],
    [['--seq-len', '16', '--segments', '4', '--dilations', '1', '--head-offsets', 'odd', '--out', out], /--head-offsets: "odd" is not one of paper, blocked/],
    [['--seq-len', '16', '--segments', '4', '--dilations', '1'], /missing --out/],
    [['--seq-len', '16', '--segments', '4', '--dilations', '1', '--out', join(work, 'no-such-dir', 'x.svg')], /cannot write .*no such directory/],
    [['--seq-len', '16', '--segments', '4', '--dilations', '1', '--out', work], /is a directory/],
    [['--seq-len', '16', '--segments', '4', '--dilations', '1', '--bogus', '--out', out], /unknown flag --bogus/],
  ];
  const results = await Promise.all(cases.map(([args]) => cli(['viz', ...args])));
  for (const [i, [args, pattern]] of cases.entries()) {
    const r = results[i]!;
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}; ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^longnet viz: /);
    assert.match(lines[0]!, pattern);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  }
  assert.equal(existsSync(out), false);
  assert.deepEqual(readdirSync(work).filter((n) => n.startsWith('.')), [], 'no temporary files left');
});

test('an existing file is replaced whole', async () => {
  const out = join(work, 'replace.svg');
  writeFileSync(out, 'old content');
  const r = await cli(['viz', '--seq-len', '8', '--segments', '4', '--dilations', '2', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  const svg = readFileSync(out, 'utf8');
  assert.ok(svg.startsWith('<svg'));
  assert.equal(cells(svg).filter((c) => c.row === '0' && c.col === '0').length, 2 * 4);
});

test('longnet --help lists viz, and viz --help its flags', async () => {
  const top = await cli(['--help']);
  assert.match(top.stdout, /\n {2}viz +draw which keys each query sees/);
  const help = await cli(['viz', '--help']);
  assert.equal(help.code, 0);
  for (const flag of ['--seq-len N', '--segments LIST', '--dilations LIST', '--heads H', '--causal', '--head-offsets', '--out FILE']) {
    assert.ok(help.stdout.includes(flag), flag);
  }
});
