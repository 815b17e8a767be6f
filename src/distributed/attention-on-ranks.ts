/**
 * `longnet attention --ranks P`: the same computation as the single-device command, with the sequence
 * split over P ranks run concurrently in this process (sequence-parallel attention on the CPU).
 */
import type { DilatedAttentionOptions } from '../attention/patterns.js';
import { check } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';
import { runRanks } from './in-process.js';
import { sequenceParallelAttention } from './sequence-parallel.js';
import { joinSequence, splitSequence } from './split.js';

type Values = Float32Array | Float64Array;

/** o and lse (and dq, dk, dv when dO is given) of the whole sequence, computed on `ranks` ranks. */
export async function attentionOnRanks(
  shape: readonly number[], q: Values, k: Values, v: Values, dO: Values | null, options: DilatedAttentionOptions, ranks: number,
): Promise<Map<string, Values>> {
  const N = shape[1]!;
  check(ranks <= N, `--ranks ${ranks} is more than the sequence length ${N} (each rank needs at least one position)`);
  const split = (data: Values): Tensor[] => splitSequence(Tensor.fromArray(data, shape), ranks);
  const [qs, ks, vs] = [split(q), split(k), split(v)];
  const ds = dO === null ? null : split(dO);
  const results = await runRanks(ranks, async (comm) => {
    const j = comm.rank;
    const r = await sequenceParallelAttention(comm, qs[j]!, ks[j]!, vs[j]!, { ...options, sequenceLength: N });
    const grads = ds === null ? null : await r.backward(ds[j]!);
    if (grads === null) r.dispose();
    return { output: r.output, lse: r.lse, grads };
  });
  const out = new Map<string, Values>();
  const join = (parts: Tensor[]): Values => joinSequence(parts).toArray() as Values;
  out.set('o', join(results.map((r) => r.output)));
  out.set('lse', join(results.map((r) => r.lse)));
  if (ds !== null) {
    out.set('dq', join(results.map((r) => r.grads!.dq)));
    out.set('dk', join(results.map((r) => r.grads!.dk)));
    out.set('dv', join(results.map((r) => r.grads!.dv)));
  }
  return out;
}
