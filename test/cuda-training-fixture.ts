// What the cuda training tests share: the tiny model over bytes, the trainer's options, a corpus written
// to a scratch folder, and the warm-up after which the addon's once-per-process buffers exist.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import type { CudaBackend } from '../src/backend/cuda/index.js';
import { ByteTokenizer, buildTokenDataset, type TokenDataset } from '../src/data/index.js';
import { LongNetDecoder, presetConfig } from '../src/model/index.js';
import type { FloatDType } from '../src/tensor/dtype.js';
import { tensor, tidy } from '../src/tensor/index.js';
import type { TrainerOptions } from '../src/train/trainer.js';

export const tiny = presetConfig('tiny', { vocabSize: 257 });

export function trainerOptions(device: 'cpu' | 'cuda'): TrainerOptions {
  return {
    seqLen: 128, batch: 2, accumulate: 2, schedule: { lr: 3e-3, totalSteps: 20, warmup: 2, endLr: 0 },
    adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01 }, clip: 2, seed: 3, device,
  };
}

/** A scratch folder removed after the file's tests, holding `lines` as corpus.js, and its dataset (built once). */
export function corpusFixture(prefix: string, lines: readonly string[]): { work: string; corpusPath: string; data: () => Promise<TokenDataset> } {
  const work = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(work, { recursive: true, force: true }));
  const corpusPath = join(work, 'corpus.js');
  writeFileSync(corpusPath, lines.join('\n'));
  let dataset: Promise<TokenDataset> | null = null;
  const data = (): Promise<TokenDataset> => (dataset ??= buildTokenDataset(corpusPath, new ByteTokenizer(), { valFraction: 0.1 }));
  return { work, corpusPath, data };
}

/**
 * One forward and backward of a small model on cuda, freed: what the addon creates once per process
 * (the cuBLASLt workspace) exists afterwards, so that bytes in use can be compared before and after.
 */
export function warmUpCuda(gpu: CudaBackend, activations?: FloatDType): void {
  const model = new LongNetDecoder(tiny, { seed: 1, device: 'cuda', ...(activations ? { activations } : {}) });
  tidy(() => {
    const ids = tensor(Int32Array.from({ length: 64 }, (_, i) => i % 257), [1, 64], { dtype: 'int32', device: 'cuda' });
    model.loss(ids, ids).backward();
  });
  model.dispose();
  gpu.synchronize();
}
