/**
 * The loss plot written beside a checkpoint (`loss.svg`): training loss (raw, faint, and smoothed) and
 * validation loss against step, loss on the left axis and the matching perplexity on the right. Plain
 * SVG 1.1 with no scripts or external fonts, so any browser or image viewer shows it.
 */
import type { StepRecord } from './metrics.js';

const WIDTH = 760;
const HEIGHT = 440;
const MARGIN = { left: 70, right: 78, top: 48, bottom: 56 };
const COLORS = { train: '#9ecae1', smooth: '#1f77b4', val: '#e6550d', grid: '#e5e5e5', axis: '#333333' };

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? 10 * magnitude;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function formatTick(v: number): string {
  if (Math.abs(v) >= 1e4) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

/** Exponential moving average with bias correction (TensorBoard's smoothing). */
function smooth(values: number[], weight: number): number[] {
  let avg = 0;
  return values.map((v, i) => {
    avg = weight * avg + (1 - weight) * v;
    return avg / (1 - Math.pow(weight, i + 1));
  });
}

/** At most `max` points: means of consecutive buckets (keeps the file small for long runs). */
function downsample(points: [number, number][], max: number): [number, number][] {
  if (points.length <= max) return points;
  const out: [number, number][] = [];
  const per = points.length / max;
  for (let b = 0; b < max; b++) {
    const slice = points.slice(Math.floor(b * per), Math.floor((b + 1) * per));
    if (slice.length === 0) continue;
    out.push([slice.reduce((s, p) => s + p[0], 0) / slice.length, slice.reduce((s, p) => s + p[1], 0) / slice.length]);
  }
  return out;
}

export interface PlotOptions {
  title?: string;
}

/** The SVG text of the loss plot for `records` (an empty plot with a note when there are none). */
export function lossPlotSvg(records: readonly StepRecord[], options: PlotOptions = {}): string {
  const title = options.title ?? 'Training loss';
  const train = records.filter((r) => r.loss !== undefined && Number.isFinite(r.loss)).map((r) => [r.step, r.loss!] as [number, number]);
  const val = records
    .filter((r) => r.valLoss !== undefined && Number.isFinite(r.valLoss))
    .map((r) => [r.step, r.valLoss!] as [number, number]);
  const all = [...train, ...val];
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" ` +
      `font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect x="0" y="0" width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`,
    `<text x="${WIDTH / 2}" y="26" text-anchor="middle" font-size="16" font-weight="bold">${escapeXml(title)}</text>`,
  );
  if (all.length === 0) {
    parts.push(`<text x="${WIDTH / 2}" y="${HEIGHT / 2}" text-anchor="middle" fill="#777777">no steps recorded yet</text>`, '</svg>');
    return parts.join('\n') + '\n';
  }
  let xMin = Math.min(...all.map((p) => p[0]));
  let xMax = Math.max(...all.map((p) => p[0]));
  if (xMax === xMin) { xMin -= 1; xMax += 1; }
  xMin = Math.min(xMin, 0);
  let yMin = Math.min(...all.map((p) => p[1]));
  let yMax = Math.max(...all.map((p) => p[1]));
  const pad = (yMax - yMin) * 0.05 || 0.5;
  yMin = Math.max(0, yMin - pad);
  yMax += pad;
  const yTicks = niceTicks(yMin, yMax, 6);
  yMin = Math.min(yMin, yTicks[0]!);
  yMax = Math.max(yMax, yTicks[yTicks.length - 1]!);
  const xTicks = niceTicks(xMin, xMax, 6).filter((t) => t >= xMin && t <= xMax);
  const sx = (x: number): number => MARGIN.left + ((x - xMin) / (xMax - xMin)) * plotW;
  const sy = (y: number): number => MARGIN.top + (1 - (y - yMin) / (yMax - yMin)) * plotH;
  const f = (v: number): string => v.toFixed(1);
  const x0 = MARGIN.left;
  const x1 = MARGIN.left + plotW;
  const y0 = MARGIN.top + plotH;

  // grid and ticks
  parts.push('<g class="grid" stroke-width="1">');
  for (const t of yTicks) parts.push(`<line x1="${x0}" y1="${f(sy(t))}" x2="${x1}" y2="${f(sy(t))}" stroke="${COLORS.grid}"/>`);
  for (const t of xTicks) parts.push(`<line x1="${f(sx(t))}" y1="${MARGIN.top}" x2="${f(sx(t))}" y2="${y0}" stroke="${COLORS.grid}"/>`);
  parts.push('</g>');
  parts.push(`<g class="axes" stroke="${COLORS.axis}" fill="none"><rect x="${x0}" y="${MARGIN.top}" width="${plotW}" height="${plotH}"/></g>`);
  parts.push(`<g class="y-axis" text-anchor="end" fill="${COLORS.axis}">`);
  for (const t of yTicks) parts.push(`<text x="${x0 - 8}" y="${f(sy(t) + 4)}">${formatTick(t)}</text>`);
  parts.push('</g>');
  // right axis: the perplexity exp(loss) at the same heights
  parts.push(`<g class="y-axis-perplexity" text-anchor="start" fill="${COLORS.axis}">`);
  for (const t of yTicks) parts.push(`<text x="${x1 + 8}" y="${f(sy(t) + 4)}">${formatTick(Number(Math.exp(t).toPrecision(3)))}</text>`);
  parts.push('</g>');
  parts.push(`<g class="x-axis" text-anchor="middle" fill="${COLORS.axis}">`);
  for (const t of xTicks) parts.push(`<text x="${f(sx(t))}" y="${y0 + 18}">${formatTick(t)}</text>`);
  parts.push('</g>');
  parts.push(
    `<text class="x-label" x="${x0 + plotW / 2}" y="${HEIGHT - 14}" text-anchor="middle">step</text>`,
    `<text class="y-label" transform="translate(20 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">loss (nats per token)</text>`,
    `<text class="y-label-perplexity" transform="translate(${WIDTH - 16} ${MARGIN.top + plotH / 2}) rotate(90)" text-anchor="middle">perplexity</text>`,
  );

  // smoothing over about the last tenth of the points, so a short run still shows its trend
  const trainSmoothed = smooth(train.map((q) => q[1]), Math.min(0.98, Math.max(0, 1 - 10 / train.length)));
  const path = (pts: [number, number][]): string => pts.map((p, i) => `${i === 0 ? 'M' : 'L'}${f(sx(p[0]))} ${f(sy(p[1]))}`).join(' ');
  if (train.length > 0) {
    const shown = downsample(train, 1500);
    parts.push(`<path class="train-loss" d="${path(shown)}" fill="none" stroke="${COLORS.train}" stroke-width="1"/>`);
    const smoothed = downsample(train.map((p, i) => [p[0], trainSmoothed[i]!] as [number, number]), 1500);
    parts.push(`<path class="train-loss-smoothed" d="${path(smoothed)}" fill="none" stroke="${COLORS.smooth}" stroke-width="2"/>`);
  }
  if (val.length > 0) {
    parts.push(`<path class="val-loss" d="${path(val)}" fill="none" stroke="${COLORS.val}" stroke-width="2.5"/>`);
    parts.push(`<g class="val-points" fill="${COLORS.val}">`);
    for (const p of val) parts.push(`<circle cx="${f(sx(p[0]))}" cy="${f(sy(p[1]))}" r="3.5"><title>step ${p[0]}: validation loss ${p[1].toFixed(4)}, perplexity ${Math.exp(p[1]).toFixed(3)}</title></circle>`);
    parts.push('</g>');
  }

  // legend, top right inside the plot, with the latest values
  const lastTrain = trainSmoothed.at(-1);
  const lastVal = val.at(-1)?.[1];
  const entries: [string, string, number][] = [];
  if (lastTrain !== undefined) {
    entries.push([`train loss (smoothed) ${lastTrain.toFixed(3)}`, COLORS.smooth, 2]);
    entries.push(['train loss (each step)', COLORS.train, 1]);
  }
  if (lastVal !== undefined) entries.push([`validation loss ${lastVal.toFixed(3)} (ppl ${Math.exp(lastVal).toFixed(2)})`, COLORS.val, 2.5]);
  const lx = x1 - 290;
  const ly = MARGIN.top + 10;
  parts.push(`<g class="legend"><rect x="${lx}" y="${ly}" width="280" height="${12 + 20 * entries.length}" fill="#ffffff" fill-opacity="0.85" stroke="#cccccc"/>`);
  entries.forEach(([label, color, w], i) => {
    const y = ly + 18 + 20 * i;
    parts.push(`<line x1="${lx + 10}" y1="${y - 4}" x2="${lx + 36}" y2="${y - 4}" stroke="${color}" stroke-width="${w}"/>`);
    parts.push(`<text x="${lx + 44}" y="${y}">${escapeXml(label)}</text>`);
  });
  parts.push('</g>', '</svg>');
  return parts.join('\n') + '\n';
}

export interface LogLogSeries {
  label: string;
  /** (x, y) pairs, both positive; drawn in x order. */
  points: readonly (readonly [number, number])[];
  color?: string;
  dashed?: boolean;
}

export interface LogLogPlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Tick labels of the x axis (default: the value, compactly). */
  formatX?: (x: number) => string;
  /** Lines of small print under the title. */
  notes?: readonly string[];
}

const SERIES_COLORS = ['#d62728', '#1f77b4', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf'];

/**
 * Several series on log-log axes (benchmarks: time against sequence length), with a legend on the right.
 * Grid lines at the powers of 10 of y and at every x of the data; plain SVG 1.1 like the loss plot.
 */
export function logLogPlotSvg(series: readonly LogLogSeries[], options: LogLogPlotOptions): string {
  const width = 860, height = 480;
  const notes = options.notes ?? [];
  const m = { left: 72, right: 230, top: 48 + 14 * notes.length, bottom: 56 };
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<title>${escapeXml(options.title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${m.left}" y="24" font-size="15" font-weight="bold">${escapeXml(options.title)}</text>`,
    ...notes.map((n, i) => `<text x="${m.left}" y="${42 + 14 * i}" font-size="11" fill="#555555">${escapeXml(n)}</text>`),
  ];
  const pts = series.flatMap((s) => s.points).filter(([x, y]) => x > 0 && y > 0 && Number.isFinite(x) && Number.isFinite(y));
  if (pts.length === 0) {
    parts.push(`<text x="${width / 2}" y="${height / 2}" text-anchor="middle" fill="#777777">no measurements</text>`, '</svg>');
    return parts.join('\n') + '\n';
  }
  const lx = (x: number): number => Math.log10(x);
  const xs = [...new Set(pts.map((p) => p[0]))].sort((a, b) => a - b);
  const x0 = lx(xs[0]!) - 0.1, x1 = lx(xs[xs.length - 1]!) + 0.1;
  const y0 = Math.floor(lx(Math.min(...pts.map((p) => p[1])))), y1 = Math.max(y0 + 1, Math.ceil(lx(Math.max(...pts.map((p) => p[1])))));
  const right = width - m.right, bottom = height - m.bottom;
  const px = (x: number): number => m.left + ((lx(x) - x0) / Math.max(x1 - x0, 1e-9)) * (right - m.left);
  const py = (y: number): number => bottom - ((lx(y) - y0) / (y1 - y0)) * (bottom - m.top);
  const f = (v: number): string => v.toFixed(1);
  const fx = options.formatX ?? ((x: number) => formatTick(x));
  parts.push('<g class="grid" stroke-width="1">');
  for (let e = y0; e <= y1; e++) parts.push(`<line x1="${m.left}" y1="${f(py(10 ** e))}" x2="${right}" y2="${f(py(10 ** e))}" stroke="${COLORS.grid}"/>`);
  for (const x of xs) parts.push(`<line x1="${f(px(x))}" y1="${m.top}" x2="${f(px(x))}" y2="${bottom}" stroke="${COLORS.grid}"/>`);
  parts.push('</g>');
  parts.push(`<g class="axes" stroke="${COLORS.axis}" fill="none"><rect x="${m.left}" y="${m.top}" width="${right - m.left}" height="${bottom - m.top}"/></g>`);
  parts.push(`<g class="y-axis" text-anchor="end" fill="${COLORS.axis}">`);
  for (let e = y0; e <= y1; e++) parts.push(`<text x="${m.left - 6}" y="${f(py(10 ** e) + 4)}">${formatTick(Number((10 ** e).toPrecision(1)))}</text>`);
  parts.push('</g>');
  // every x of the data, thinned to about 12 labels
  const stride = Math.max(1, Math.ceil(xs.length / 12));
  parts.push(`<g class="x-axis" text-anchor="middle" fill="${COLORS.axis}">`);
  xs.forEach((x, i) => { if (i % stride === 0) parts.push(`<text x="${f(px(x))}" y="${bottom + 18}">${escapeXml(fx(x))}</text>`); });
  parts.push('</g>');
  parts.push(
    `<text class="x-label" x="${(m.left + right) / 2}" y="${height - 14}" text-anchor="middle">${escapeXml(options.xLabel)}</text>`,
    `<text class="y-label" transform="translate(18 ${(m.top + bottom) / 2}) rotate(-90)" text-anchor="middle">${escapeXml(options.yLabel)}</text>`,
  );
  series.forEach((s, i) => {
    const color = s.color ?? SERIES_COLORS[i % SERIES_COLORS.length]!;
    const own = s.points.filter(([x, y]) => x > 0 && y > 0 && Number.isFinite(x) && Number.isFinite(y)).slice().sort((a, b) => a[0] - b[0]);
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    if (own.length > 1) {
      parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${own.map(([x, y]) => `${f(px(x))},${f(py(y))}`).join(' ')}"/>`);
    }
    for (const [x, y] of own) {
      parts.push(`<circle cx="${f(px(x))}" cy="${f(py(y))}" r="3" fill="${color}"><title>${escapeXml(`${s.label}: ${fx(x)}, ${Number(y.toPrecision(4))}`)}</title></circle>`);
    }
    const ly = m.top + 12 + 20 * i;
    parts.push(`<line x1="${right + 12}" y1="${ly}" x2="${right + 36}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`);
    parts.push(`<text x="${right + 42}" y="${ly + 4}">${escapeXml(s.label)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
