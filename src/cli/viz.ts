/**
 * `longnet viz`: draws, as SVG, which keys each query sees under a dilated attention schedule, per
 * pattern and per head (the paper's figures 2 and 3), with the combined multiset view: the number of
 * patterns that give a key to a query, which is the weight that key carries in the shared softmax
 * (docs/ATTENTION.md). A last row sums over the heads.
 */
import type { HeadOffsets } from '../backend/backend.js';
import { headOffset } from '../attention/patterns.js';
import { InputError } from '../errors.js';
import { checkWritableTarget, writeFileAtomic } from '../io/atomic.js';
import type { Args, Command } from './command.js';
import { parseChoice, readSchedule } from './values.js';
import { parseInteger } from './train.js';

/** The longest sequence drawn (N^2 cells a panel). */
export const VIZ_MAX_SEQ_LEN = 256;
const VIZ_MAX_HEADS = 64;

export interface VizOptions {
  seqLen: number;
  segmentLengths: number[];
  dilationRates: number[];
  heads: number;
  causal: boolean;
  headOffsets: HeadOffsets;
  /** Pixels a cell; default: as large as fits a 256-pixel panel, 2 to 12. */
  cell?: number;
}

/**
 * Counts[h][i][q * N + k] = 1 when pattern i gives key k to query q in head h (docs/ATTENTION.md):
 * segments of w' = min(w, N), the head's offset, the positions of each segment at that offset
 * attending to each other (earlier ones only when causal).
 */
export function patternMasks(o: VizOptions): Uint8Array[][] {
  const n = o.seqLen;
  return Array.from({ length: o.heads }, (_, h) => o.segmentLengths.map((w, i) => {
    const r = o.dilationRates[i]!;
    const seg = Math.min(w, n);
    const offset = headOffset(h, o.heads, r, o.headOffsets);
    const mask = new Uint8Array(n * n);
    for (let start = 0; start < n; start += seg) {
      const end = Math.min(start + seg, n);
      for (let q = start + offset; q < end; q += r) {
        for (let k = start + offset; k < end && (!o.causal || k <= q); k += r) mask[q * n + k] = 1;
      }
    }
    return mask;
  }));
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
const COMBINED = '#333333';

const escapeXml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/**
 * The SVG text. Panels: one row per head and a last row "all heads"; one column per pattern and a last
 * column "combined". Each drawn cell is a rect with data-row (the head, or "all"), data-col (the pattern
 * index, or "combined"), data-query, data-key and data-count (how many patterns, and in the last row
 * heads, select that pair); cells that nothing selects are not drawn.
 */
export function vizSvg(o: VizOptions): string {
  const n = o.seqLen;
  const masks = patternMasks(o);
  const p = o.segmentLengths.length;
  const cell = o.cell ?? Math.max(2, Math.min(12, Math.floor(256 / n)));
  const panel = n * cell;
  const gap = 28;
  const left = 110;
  const top = 92;
  const cols = p + 1;
  const rows = o.heads + 1;
  const width = left + cols * (panel + gap) + 10;
  const height = top + rows * (panel + gap) + 40;
  const title = `Dilated attention: N = ${n}, w = ${o.segmentLengths.join(',')}, r = ${o.dilationRates.join(',')}, ` +
    `${o.heads} head${o.heads === 1 ? '' : 's'} (${o.headOffsets} offsets), ${o.causal ? 'causal' : 'not causal'}`;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="Helvetica, Arial, sans-serif" font-size="12" data-seq-len="${n}" data-heads="${o.heads}" data-patterns="${p}">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="24" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="${left}" y="44" fill="#555555">Rows of a panel are queries, columns keys (position 0 top left).</text>`,
    `<text x="${left}" y="60" fill="#555555">"combined": the multiset of all patterns, darker where more patterns select a key (its weight in the shared softmax).</text>`,
  ];
  const px = (c: number): number => left + c * (panel + gap);
  const py = (r: number): number => top + r * (panel + gap);
  for (let i = 0; i <= p; i++) {
    const label = i < p ? `pattern ${i}: w=${o.segmentLengths[i]}, r=${o.dilationRates[i]}` : 'combined (multiset)';
    out.push(`<text x="${px(i)}" y="${top - 10}">${escapeXml(label)}</text>`);
  }
  const maxCount = p * o.heads;
  const drawPanel = (row: number, col: number, rowLabel: string, colLabel: string, counts: Uint8Array | Uint16Array, color: string, scaleMax: number): void => {
    const x0 = px(col);
    const y0 = py(row);
    out.push(`<g class="panel" data-row="${rowLabel}" data-col="${colLabel}">`);
    out.push(`<rect x="${x0}" y="${y0}" width="${panel}" height="${panel}" fill="#f4f4f4" stroke="#999999" stroke-width="0.5"/>`);
    for (let q = 0; q < n; q++) {
      for (let k = 0; k < n; k++) {
        const c = counts[q * n + k]!;
        if (c === 0) continue;
        const opacity = scaleMax <= 1 ? 1 : 0.25 + (0.75 * c) / scaleMax;
        out.push(
          `<rect class="cell" x="${x0 + k * cell}" y="${y0 + q * cell}" width="${cell}" height="${cell}" fill="${color}" ` +
            `fill-opacity="${opacity.toFixed(3)}" data-row="${rowLabel}" data-col="${colLabel}" data-query="${q}" data-key="${k}" data-count="${c}"/>`,
        );
      }
    }
    out.push('</g>');
  };
  const sumInto = (target: Uint16Array, source: Uint8Array | Uint16Array): void => {
    for (let j = 0; j < source.length; j++) target[j] += source[j]!;
  };
  const allHeads = Array.from({ length: p }, () => new Uint16Array(n * n));
  const allCombined = new Uint16Array(n * n);
  for (let h = 0; h < o.heads; h++) {
    out.push(`<text x="10" y="${py(h) + Math.min(panel, 40) / 2 + 4}">head ${h}</text>`);
    const combined = new Uint16Array(n * n);
    masks[h]!.forEach((mask, i) => {
      drawPanel(h, i, String(h), String(i), mask, PALETTE[i % PALETTE.length]!, 1);
      sumInto(combined, mask);
      sumInto(allHeads[i]!, mask);
    });
    drawPanel(h, p, String(h), 'combined', combined, COMBINED, p);
    sumInto(allCombined, combined);
  }
  out.push(`<text x="10" y="${py(o.heads) + Math.min(panel, 40) / 2 + 4}">all heads</text>`);
  allHeads.forEach((mask, i) => drawPanel(o.heads, i, 'all', String(i), mask, PALETTE[i % PALETTE.length]!, o.heads));
  drawPanel(o.heads, p, 'all', 'combined', allCombined, COMBINED, maxCount);
  out.push(
    `<text x="${left}" y="${height - 14}" fill="#555555">Head h takes offset ${o.headOffsets === 'paper' ? 'h mod r' : 'h // ceil(H / r)'}` +
      ' in every segment of length min(w, N); the last row counts the heads that select each pair.</text>',
    '</svg>',
  );
  return out.join('\n') + '\n';
}

function readOptions(args: Args): VizOptions & { output: string } {
  const seqLen = parseInteger('seq-len', args.requireString('seq-len'), 1);
  if (seqLen > VIZ_MAX_SEQ_LEN) {
    throw new InputError(`--seq-len ${seqLen} is too long to draw (at most ${VIZ_MAX_SEQ_LEN}; the pattern repeats, so draw a shorter N)`);
  }
  const { segmentLengths, dilationRates } = readSchedule(args);
  if (segmentLengths.length > PALETTE.length) throw new InputError(`at most ${PALETTE.length} patterns can be drawn, got ${segmentLengths.length}`);
  const headsText = args.string('heads');
  const heads = headsText === undefined ? 1 : parseInteger('heads', headsText, 1);
  if (heads > VIZ_MAX_HEADS) throw new InputError(`--heads ${heads} is more than the ${VIZ_MAX_HEADS} that can be drawn`);
  const cellText = args.string('cell');
  const cell = cellText === undefined ? undefined : parseInteger('cell', cellText, 1);
  if (cell !== undefined && cell > 64) throw new InputError(`--cell ${cell} is larger than 64 pixels`);
  return {
    seqLen, segmentLengths, dilationRates, heads, causal: args.boolean('causal'),
    headOffsets: parseChoice<HeadOffsets>('head-offsets', args.string('head-offsets') ?? 'paper', ['paper', 'blocked']),
    ...(cell !== undefined ? { cell } : {}),
    output: args.requireString('out'),
  };
}

export const command: Command = {
  name: 'viz',
  summary: 'draw which keys each query sees, per pattern and head, as SVG (the paper\'s figures 2 and 3)',
  flags: {
    'seq-len': { type: 'string', value: 'N', required: true, description: `sequence length to draw (at most ${VIZ_MAX_SEQ_LEN})` },
    segments: { type: 'string', value: 'LIST', required: true, description: 'segment lengths w, comma-separated (e.g. 4,8,16)' },
    dilations: { type: 'string', value: 'LIST', required: true, description: 'dilation rates r, one per segment length (e.g. 1,2,4)' },
    heads: { type: 'string', value: 'H', description: 'attention heads (each takes its own offset)', defaultText: '1' },
    causal: { type: 'boolean', description: 'queries see only earlier keys of their segment' },
    'head-offsets': { type: 'string', value: 'paper|blocked', description: "which residue each head takes: paper (h mod r) or blocked (torchscale's)", defaultText: 'paper' },
    cell: { type: 'string', value: 'PX', description: 'pixels per cell', defaultText: 'fit 256 pixels, 2 to 12' },
    out: { type: 'string', value: 'FILE', required: true, description: 'SVG file to write (replaced atomically)' },
  },
  details: [
    'One panel per (head, pattern): a filled cell (query row, key column) is a key that pattern gives to',
    'that query. The "combined" column overlays all patterns, darker where several select the same key',
    '(it then counts several times in the softmax); the last row adds up the heads.',
    'Example (the paper\'s figure 3): longnet viz --seq-len 16 --segments 4,8,16 --dilations 1,2,4 --heads 4 --out viz.svg',
  ].join('\n'),
  run(args: Args) {
    const o = readOptions(args);
    checkWritableTarget(o.output);
    const svg = vizSvg(o);
    writeFileAtomic(o.output, svg);
    let pairs = 0;
    for (const head of patternMasks(o)) for (const mask of head) for (const c of mask) pairs += c;
    process.stdout.write(
      `wrote ${o.output}: N = ${o.seqLen}, ${o.segmentLengths.length} pattern(s) x ${o.heads} head(s), ` +
        `${pairs} selected (pattern, head, query, key) entries\n`,
    );
  },
};
