/**
 * Who computes what in sequence-parallel dilated attention (docs/ATTENTION.md, sequence parallelism), as plain index arrays. Every
 * rank builds the same global plan from the same arguments, so no metadata is ever exchanged.
 *
 * Rank j holds positions [starts[j], starts[j+1]) with starts[j] = floor(j N / P). For each pattern,
 * a segment lying inside one rank is local; a segment spanning several ranks is shared, and only those
 * ranks exchange data for it. Each rank's share of a shared segment is a "piece": its selected positions
 * (per head offset) inside the segment. Rows are numbered like the local [B, l, H, D] tensor viewed as
 * [B * l * H, D]: row (b * l + p - start) * H + h. Within a piece, rows go by unit u = b * H + h, then
 * position.
 *
 * Non-causal: every rank of a shared segment all-gathers the pieces of the others and attends its own
 * queries to all of them. Causal: queries of rank t need the keys of ranks t' <= t of the segment only.
 * The block (t, t') of one unit, t' < t, is computed either at t ("pull": t' sends its keys and values)
 * or at t' ("push": t sends its queries, t' returns partial output and log-sum-exp, merged by t). Both
 * move about the same bytes; the choice balances the work: units are assigned greedily, largest first,
 * to the less loaded of the two ranks, then improved by moving single units while that lowers the
 * busier rank of a pair. Without balancing, the last rank of a segment does (2g - 1) times the work of
 * the first.
 */
import type { AttentionPattern, HeadOffsets } from '../backend/backend.js';
import { headOffset } from '../attention/patterns.js';

export interface SequencePlanInput {
  readonly seqLen: number;
  readonly ranks: number;
  readonly batch: number;
  readonly heads: number;
  readonly patterns: readonly AttentionPattern[];
  readonly causal: boolean;
  readonly headOffsets: HeadOffsets;
  /** Spread causal work of shared segments by pushing queries to earlier ranks (default in the op). */
  readonly balance: boolean;
}

/** starts[j] = floor(j N / P); rank j holds [starts[j], starts[j + 1]). */
export function sequenceStarts(seqLen: number, ranks: number): number[] {
  return Array.from({ length: ranks + 1 }, (_, j) => Math.floor((j * seqLen) / ranks));
}

/** The rank holding position `pos`. */
export function rankOf(pos: number, starts: readonly number[]): number {
  let lo = 0;
  let hi = starts.length - 2;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid]! <= pos) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The part of a segment held by one rank: positions [lo, hi); per head, the first selected one and how many. */
export interface Piece {
  readonly rank: number;
  readonly lo: number;
  readonly hi: number;
  readonly firsts: readonly number[];
  readonly counts: readonly number[];
}

function makePiece(rank: number, lo: number, hi: number, segStart: number, r: number, offsets: readonly number[]): Piece {
  const firsts: number[] = [];
  const counts: number[] = [];
  for (const off of offsets) {
    const base = segStart + off;
    const first = lo <= base ? base : base + Math.ceil((lo - base) / r) * r;
    firsts.push(first);
    counts.push(first < hi ? Math.ceil((hi - first) / r) : 0);
  }
  return { rank, lo, hi, firsts, counts };
}

/** A segment spanning ranks first..last; pieces[i] belongs to rank first + i. */
export interface SharedSegment {
  readonly pattern: number;
  readonly start: number;
  readonly end: number;
  readonly first: number;
  readonly last: number;
  readonly pieces: readonly Piece[];
  /** Causal: pushed[qi][ki][u] = 1 when unit u of block (queries of member qi, keys of member ki) runs on ki. */
  readonly pushed: Uint8Array[][];
}

/** One message of a causal exchange, as both its sender and its receiver see it. */
export interface MessageSpec {
  readonly peer: number;
  /** kv: keys then values of the sender's piece, for the receiver's queries; q: the sender's queries. */
  readonly kind: 'kv' | 'q';
  readonly segment: SharedSegment;
  /** The units carried, ascending. */
  readonly units: readonly number[];
  /** Rows per unit, and their sum. */
  readonly unitCounts: readonly number[];
  readonly count: number;
  /** Sender side: the local rows carried, in message order (empty on the receiving side). */
  readonly rows: Int32Array;
}

/** The groups of one packed attention call and the kv-table rows of their keys and values. */
export interface CallPlan {
  readonly qOffsets: Int32Array;
  readonly kOffsets: Int32Array;
  readonly keyK: Int32Array;
  readonly keyV: Int32Array;
  /** Score entries computed (for load accounting). */
  readonly work: number;
}

/** A shared segment as one of its ranks runs it. */
export interface SharedExec {
  readonly segment: SharedSegment;
  /** World ranks of the segment, ascending. */
  readonly ranks: readonly number[];
  /** This rank's piece: rows [ownStart, ownStart + ownCount) of the own rows. */
  readonly ownStart: number;
  readonly ownCount: number;
  /** Rows of every member's piece. */
  readonly memberCounts: readonly number[];
  /** Non-causal: first kv-table row of this segment's all-gathered section. */
  readonly tableBase: number;
}

/**
 * One pattern on one rank that touches a shared segment. The kv table is [own keys (nOwn rows); own
 * values (nOwn); then, non-causal, each shared section (every member's keys then values); causal, each
 * received kv message (keys then values)].
 */
export interface PatternExec {
  readonly pattern: number;
  /** Local rows of this rank's selected positions in every segment it touches. */
  readonly ownRows: Int32Array;
  readonly own: CallPlan;
  readonly shared: readonly SharedExec[];
  readonly tableRows: number;
  /** Causal exchanges: what this rank sends and receives in the forward pass. */
  readonly sends: readonly MessageSpec[];
  readonly recvs: readonly MessageSpec[];
  /** First kv-table row of each received kv message (indexed like recvs; -1 for q messages). */
  readonly recvBase: readonly number[];
  /** Causal, balanced: queries pushed here (the received q messages, concatenated) against own keys. */
  readonly offloaded: CallPlan | null;
}

export interface RankPlan {
  /** Patterns whose segments touching this rank all lie inside it: one local kernel call. */
  readonly localPatterns: readonly number[];
  readonly execs: readonly PatternExec[];
}

export interface SequencePlan {
  readonly input: SequencePlanInput;
  readonly starts: readonly number[];
  readonly shared: readonly SharedSegment[];
  /** Score entries each rank computes in the forward pass (q.k products), after balancing. */
  readonly loads: readonly number[];
  /** The same with every block computed by the rank of its queries. */
  readonly unbalancedLoads: readonly number[];
  rank(j: number): RankPlan;
}

interface PatternGeometry {
  readonly w: number;
  readonly r: number;
  readonly offsets: readonly number[];
}

function geometryOf(input: SequencePlanInput, pi: number): PatternGeometry {
  const p = input.patterns[pi]!;
  const w = Math.min(p.segmentLength, input.seqLen);
  const r = p.dilationRate;
  const offsets = Array.from({ length: input.heads }, (_, h) => headOffset(h, input.heads, r, input.headOffsets));
  return { w, r, offsets };
}

/** Score entries of m queries against their own m keys. */
function square(m: number, causal: boolean): number {
  return causal ? (m * (m + 1)) / 2 : m * m;
}

function findShared(input: SequencePlanInput, starts: readonly number[]): SharedSegment[] {
  const { seqLen: N, ranks: P, batch, heads } = input;
  const out: SharedSegment[] = [];
  input.patterns.forEach((_, pi) => {
    const { w, r, offsets } = geometryOf(input, pi);
    let lastStart = -1;
    for (let j = 1; j < P; j++) {
      const x = starts[j]!;
      if (x % w === 0) continue; // a segment boundary: no segment crosses here
      const start = Math.floor(x / w) * w;
      if (start === lastStart) continue;
      lastStart = start;
      const end = Math.min(start + w, N);
      const first = rankOf(start, starts);
      const last = rankOf(end - 1, starts);
      const pieces: Piece[] = [];
      for (let t = first; t <= last; t++) {
        pieces.push(makePiece(t, Math.max(start, starts[t]!), Math.min(end, starts[t + 1]!), start, r, offsets));
      }
      const g = last - first + 1;
      const pushed = Array.from({ length: g }, () => Array.from({ length: g }, () => new Uint8Array(batch * heads)));
      out.push({ pattern: pi, start, end, first, last, pieces, pushed });
    }
  });
  return out;
}

/** Work of the segments lying wholly inside rank j, for every pattern. */
function localWork(input: SequencePlanInput, starts: readonly number[], j: number): number {
  const { seqLen: N, batch, causal } = input;
  const lo = starts[j]!;
  const hi = starts[j + 1]!;
  let total = 0;
  input.patterns.forEach((_, pi) => {
    const { w, r, offsets } = geometryOf(input, pi);
    const perSegment = (len: number): number => {
      let s = 0;
      for (const off of offsets) s += square(len > off ? Math.ceil((len - off) / r) : 0, causal);
      return s;
    };
    const firstSeg = Math.ceil(lo / w);
    const fullEnd = Math.floor(hi / w); // segments [s w, (s + 1) w) with (s + 1) w <= hi
    if (fullEnd > firstSeg) total += (fullEnd - firstSeg) * perSegment(w);
    const tailStart = Math.floor(N / w) * w;
    if (hi === N && tailStart < N && tailStart >= lo && tailStart >= firstSeg * w) total += perSegment(N - tailStart);
  });
  return batch * total;
}

interface Unit {
  readonly seg: SharedSegment;
  readonly qi: number;
  readonly ki: number;
  readonly u: number;
  readonly work: number;
}

/** Fills `pushed` and returns the loads, balanced or not. */
function assignBlocks(input: SequencePlanInput, starts: readonly number[], shared: readonly SharedSegment[]): {
  loads: number[]; unbalanced: number[];
} {
  const { ranks: P, heads: H, batch: B, causal } = input;
  const base = Array.from({ length: P }, (_, j) => localWork(input, starts, j));
  const units: Unit[] = [];
  for (const seg of shared) {
    const g = seg.pieces.length;
    for (let qi = 0; qi < g; qi++) {
      const cq = seg.pieces[qi]!.counts;
      const t = seg.first + qi;
      for (let h = 0; h < H; h++) base[t]! += B * square(cq[h]!, causal);
      for (let ki = 0; ki < g; ki++) {
        if (ki === qi || (causal && ki > qi)) continue;
        const ck = seg.pieces[ki]!.counts;
        for (let u = 0; u < B * H; u++) {
          const work = cq[u % H]! * ck[u % H]!;
          if (work > 0) units.push({ seg, qi, ki, u, work });
        }
      }
    }
  }
  const unbalanced = [...base];
  for (const x of units) unbalanced[x.seg.first + x.qi]! += x.work;
  if (!(causal && input.balance)) return { loads: unbalanced, unbalanced };

  const loads = [...base];
  const onKeys = new Uint8Array(units.length);
  const order = units.map((_, i) => i).sort((a, b) => units[b]!.work - units[a]!.work || a - b);
  for (const i of order) {
    const x = units[i]!;
    const tq = x.seg.first + x.qi;
    const tk = x.seg.first + x.ki;
    if (loads[tk]! < loads[tq]!) {
      onKeys[i] = 1;
      loads[tk]! += x.work;
    } else {
      loads[tq]! += x.work;
    }
  }
  // local improvement: move a unit to its partner whenever that lowers the busier of the two
  for (let pass = 0; pass < 50; pass++) {
    let moved = false;
    for (const i of order) {
      const x = units[i]!;
      const from = x.seg.first + (onKeys[i] ? x.ki : x.qi);
      const to = x.seg.first + (onKeys[i] ? x.qi : x.ki);
      if (loads[to]! + x.work < loads[from]!) {
        loads[from]! -= x.work;
        loads[to]! += x.work;
        onKeys[i] ^= 1;
        moved = true;
      }
    }
    if (!moved) break;
  }
  units.forEach((x, i) => {
    if (onKeys[i]) x.seg.pushed[x.qi]![x.ki]![x.u] = 1;
  });
  return { loads, unbalanced };
}

/** Local rows of a piece's selected positions for the given units, in message order. */
function pieceRows(piece: Piece, units: readonly number[], heads: number, rankStart: number, rankLen: number, r: number): number[] {
  const rows: number[] = [];
  for (const u of units) {
    const b = Math.floor(u / heads);
    const h = u % heads;
    for (let p = piece.firsts[h]!; p < piece.hi; p += r) rows.push((b * rankLen + p - rankStart) * heads + h);
  }
  return rows;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** Builds the plan; `rank(j)` derives one rank's part on demand. */
export function planSequenceParallel(input: SequencePlanInput): SequencePlan {
  const starts = sequenceStarts(input.seqLen, input.ranks);
  const shared = findShared(input, starts);
  const { loads, unbalanced } = assignBlocks(input, starts, shared);
  return {
    input, starts, shared, loads, unbalancedLoads: unbalanced,
    rank: (j) => rankPlan(input, starts, shared, j),
  };
}

function rankPlan(input: SequencePlanInput, starts: readonly number[], shared: readonly SharedSegment[], me: number): RankPlan {
  const localPatterns: number[] = [];
  const execs: PatternExec[] = [];
  input.patterns.forEach((_, pi) => {
    const mine = shared.filter((s) => s.pattern === pi && s.first <= me && me <= s.last);
    if (mine.length === 0) localPatterns.push(pi);
    else execs.push(patternExec(input, starts, pi, mine, me));
  });
  return { localPatterns, execs };
}

interface Touched {
  readonly piece: Piece;
  readonly seg: SharedSegment | null;
  /** First own row of the piece, and where each unit starts within it. */
  readonly ownStart: number;
  readonly unitStarts: readonly number[];
}

function unitStartsOf(piece: Piece, units: readonly number[], heads: number): number[] {
  const out: number[] = [];
  let at = 0;
  for (const u of units) {
    out.push(at);
    at += piece.counts[u % heads]!;
  }
  return out;
}

function patternExec(
  input: SequencePlanInput, starts: readonly number[], pi: number, mine: readonly SharedSegment[], me: number,
): PatternExec {
  const { seqLen: N, batch: B, heads: H, causal } = input;
  const { w, r, offsets } = geometryOf(input, pi);
  const lo = starts[me]!;
  const hi = starts[me + 1]!;
  const len = hi - lo;
  const allUnits = range(B * H);
  const count = (piece: Piece, units: readonly number[]): number[] => units.map((u) => piece.counts[u % H]!);

  // pass 1: this rank's piece of every segment it touches, and its own rows
  const touched: Touched[] = [];
  const ownRows: number[] = [];
  for (let s0 = Math.floor(lo / w) * w; s0 < hi; s0 += w) {
    const seg = mine.find((x) => x.start === s0) ?? null;
    const piece = seg !== null ? seg.pieces[me - seg.first]! : makePiece(me, s0, Math.min(s0 + w, N), s0, r, offsets);
    const ownStart = ownRows.length;
    for (const row of pieceRows(piece, allUnits, H, lo, len, r)) ownRows.push(row);
    touched.push({ piece, seg, ownStart, unitStarts: unitStartsOf(piece, allUnits, H) });
  }
  const nOwn = ownRows.length;

  // the causal messages of this pattern, in one canonical order on both sides (segment, peer, kind)
  const sends: MessageSpec[] = [];
  const recvs: MessageSpec[] = [];
  if (causal) {
    for (const seg of mine) {
      const g = seg.pieces.length;
      const myi = me - seg.first;
      const myPiece = seg.pieces[myi]!;
      for (let other = 0; other < g; other++) {
        if (other === myi) continue;
        const peer = seg.first + other;
        const peerPiece = seg.pieces[other]!;
        if (other < myi) {
          // earlier peer: I receive its keys for pulled units, I send my queries for pushed ones
          const pulled = allUnits.filter((u) => !seg.pushed[myi]![other]![u]);
          const pushed = allUnits.filter((u) => seg.pushed[myi]![other]![u]);
          addMessage(recvs, peer, 'kv', seg, pulled, count(peerPiece, pulled), []);
          addMessage(sends, peer, 'q', seg, pushed, count(myPiece, pushed), pieceRows(myPiece, pushed, H, lo, len, r));
        } else {
          const pulled = allUnits.filter((u) => !seg.pushed[other]![myi]![u]);
          const pushed = allUnits.filter((u) => seg.pushed[other]![myi]![u]);
          addMessage(sends, peer, 'kv', seg, pulled, count(myPiece, pulled), pieceRows(myPiece, pulled, H, lo, len, r));
          addMessage(recvs, peer, 'q', seg, pushed, count(peerPiece, pushed), []);
        }
      }
    }
  }

  // the kv table: own keys, own values, then sections (non-causal) or received kv messages (causal)
  let tableRows = 2 * nOwn;
  const sharedExecs: SharedExec[] = [];
  for (const seg of mine) {
    const t = touched.find((x) => x.seg === seg)!;
    const memberCounts = seg.pieces.map((p) => count(p, allUnits).reduce((a, b) => a + b, 0));
    const own = memberCounts[me - seg.first]!;
    sharedExecs.push({
      segment: seg, ranks: range(seg.last - seg.first + 1).map((i) => seg.first + i),
      ownStart: t.ownStart, ownCount: own, memberCounts, tableBase: causal ? -1 : tableRows,
    });
    if (!causal) tableRows += 2 * memberCounts.reduce((a, b) => a + b, 0);
  }
  const recvBase = recvs.map((m) => {
    if (m.kind !== 'kv') return -1;
    const base = tableRows;
    tableRows += 2 * m.count;
    return base;
  });

  // pass 2: the own call, one group per (segment, unit)
  const memberStarts = new Map<SharedSegment, number[][]>(
    mine.map((seg) => [seg, seg.pieces.map((p) => unitStartsOf(p, allUnits, H))]),
  );
  const kvRecvs = recvs.flatMap((m, i) => {
    if (m.kind !== 'kv') return [];
    const at = new Int32Array(B * H).fill(-1);
    let offset = 0;
    m.units.forEach((u, k) => {
      at[u] = offset;
      offset += m.unitCounts[k]!;
    });
    return [{ m, base: recvBase[i]!, at }];
  });
  const own = new CallBuilder();
  for (const t of touched) {
    const seg = t.seg;
    for (const u of allUnits) {
      const h = u % H;
      const mq = t.piece.counts[h]!;
      const qStart = t.ownStart + t.unitStarts[u]!;
      const keys: [number, number, number][] = []; // [k row, v row, count] runs
      if (seg === null) {
        keys.push([qStart, nOwn + qStart, mq]);
      } else if (!causal) {
        const x = sharedExecs.find((e) => e.segment === seg)!;
        const startsOf = memberStarts.get(seg)!;
        let base = x.tableBase;
        seg.pieces.forEach((p, i) => {
          const c = x.memberCounts[i]!;
          const at = startsOf[i]![u]!;
          keys.push([base + at, base + c + at, p.counts[h]!]);
          base += 2 * c;
        });
      } else {
        // keys of earlier ranks (pulled), in rank order, then this rank's own: the queries are the last keys
        for (const { m, base, at } of kvRecvs) {
          if (m.segment !== seg || at[u]! < 0) continue;
          keys.push([base + at[u]!, base + m.count + at[u]!, m.segment.pieces[m.peer - seg.first]!.counts[h]!]);
        }
        keys.push([qStart, nOwn + qStart, mq]);
      }
      own.group(mq, keys, causal);
    }
  }

  // causal, balanced: the queries pushed to this rank, against its own keys (no mask: they come later)
  let offloaded: CallPlan | null = null;
  if (recvs.some((m) => m.kind === 'q')) {
    const off = new CallBuilder();
    for (const m of recvs) {
      if (m.kind !== 'q') continue;
      const t = touched.find((x) => x.seg === m.segment)!;
      m.units.forEach((u, k) => {
        const start = t.ownStart + t.unitStarts[u]!;
        off.group(m.unitCounts[k]!, [[start, nOwn + start, t.piece.counts[u % H]!]], false);
      });
    }
    offloaded = off.build();
  }

  return {
    pattern: pi, ownRows: Int32Array.from(ownRows), own: own.build(), shared: sharedExecs, tableRows,
    sends, recvs, recvBase, offloaded,
  };
}

function addMessage(
  list: MessageSpec[], peer: number, kind: 'kv' | 'q', segment: SharedSegment, units: number[], unitCounts: number[], rows: number[],
): void {
  const count = unitCounts.reduce((a, b) => a + b, 0);
  if (count === 0) return; // both sides skip it
  list.push({ peer, kind, segment, units, unitCounts, count, rows: Int32Array.from(rows) });
}

/** Accumulates the groups of one packed call. */
class CallBuilder {
  private readonly qOffsets = [0];
  private readonly kOffsets = [0];
  private readonly keyK: number[] = [];
  private readonly keyV: number[] = [];
  private work = 0;

  /** A group of mq queries (taken in order) whose keys are the given runs of kv-table rows. */
  group(mq: number, runs: readonly (readonly [number, number, number])[], causal: boolean): void {
    let mk = 0;
    for (const [k, v, c] of runs) {
      for (let i = 0; i < c; i++) {
        this.keyK.push(k + i);
        this.keyV.push(v + i);
      }
      mk += c;
    }
    this.qOffsets.push(this.qOffsets[this.qOffsets.length - 1]! + mq);
    this.kOffsets.push(this.kOffsets[this.kOffsets.length - 1]! + mk);
    const m = Math.min(mq, mk);
    this.work += causal ? m * (mk - m) + (m * (m + 1)) / 2 : mq * mk;
  }

  build(): CallPlan {
    return {
      qOffsets: Int32Array.from(this.qOffsets), kOffsets: Int32Array.from(this.kOffsets),
      keyK: Int32Array.from(this.keyK), keyV: Int32Array.from(this.keyV), work: this.work,
    };
  }
}
