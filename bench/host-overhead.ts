/**
 * The host's share of a training step: the Trainer on the CUDA backend whose addon does no device work
 * (buffers are handles with a size; kernels, copies and waits return at once; reads give zeros), so the
 * time measured is the JavaScript of the model, autograd, optimizer and backend, and the N-API calls are
 * replaced by plain calls. Runs without a GPU. Use --cpu-prof for where the time goes.
 *
 *   node --import tsx bench/host-overhead.ts [--preset base] [--length 8192] [--tokenizer cl100k_base] [--data src] [--steps 5]
 */
import { parseArgs } from 'node:util';
import '../src/backend/cuda/index.js';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.js';
import { ABI_VERSION, type NativeAddon, type NativeHandle } from '../src/backend/cuda/native.js';
import { registerBackendLoader } from '../src/backend/registry.js';
import { LongNetDecoder, presetConfig } from '../src/model/index.js';
import { buildTokenDataset, createTokenizer } from '../src/data/index.js';
import { Trainer } from '../src/train/trainer.js';

const { values } = parseArgs({
  options: {
    preset: { type: 'string', default: 'base' },
    length: { type: 'string', default: '8192' },
    tokenizer: { type: 'string', default: 'cl100k_base' },
    data: { type: 'string', default: 'src' },
    steps: { type: 'string', default: '5' },
  },
});

interface Handle { size: number; freed: boolean }
let calls = 0;

/** An addon whose every method returns at once: buffers are sizes, reads are zeros. */
function nullAddon(): NativeAddon {
  const answers: Partial<Record<keyof NativeAddon, unknown>> = {
    abiVersion: ABI_VERSION,
    probe: () => ({ ok: true, reason: '', devices: 1 }),
    init: (index: number) => ({ index, name: 'no device', major: 9, minor: 0, multiprocessors: 132, totalMemory: 2 ** 40 }),
    alloc: (_dtype: number, size: number): NativeHandle => ({ size, freed: false }) as unknown as NativeHandle,
    free: (h: NativeHandle) => { (h as unknown as Handle).freed = true; },
    download: (_h: NativeHandle, out: { fill(v: number): void }) => out.fill(0),
    allFinite: () => true,
    takeQueuedCheck: () => null,
    memoryStats: () => ({ inUse: 0, cached: 0, peakInUse: 0, deviceAllocations: 0, cacheHits: 0, deviceFree: 2 ** 40, deviceTotal: 2 ** 40 }),
    matmulPrecision: () => 1,
    cublasLtVersion: () => 0,
  };
  return new Proxy({} as NativeAddon, {
    get(_target, name: string) {
      if (name in answers) {
        const a = answers[name as keyof NativeAddon];
        return typeof a === 'function' ? (...args: unknown[]) => { calls++; return (a as (...x: unknown[]) => unknown)(...args); } : a;
      }
      return () => { calls++; };
    },
  });
}

const addon = nullAddon();
const backend = new CudaBackend(addon, addon.init(0));
registerBackendLoader('cuda', () => backend);

const n = Number(values.length);
const tokenizer = createTokenizer(values.tokenizer);
const data = await buildTokenDataset(values.data, tokenizer, { valFraction: 0.01, cacheDir: '/tmp/longnet-host-overhead-tokens' });
const config = presetConfig(values.preset, { vocabSize: tokenizer.vocabSize });
const model = new LongNetDecoder(config, { seed: 0, device: 'cuda', activations: 'bfloat16' });
const trainer = new Trainer(model, data, {
  seqLen: n, batch: 1, accumulate: 1, schedule: { lr: 6e-4, totalSteps: 1000, warmup: 2, endLr: 0 },
  adamw: { beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.01 }, clip: 2, seed: 0, device: 'cuda',
});
trainer.step();
const times: number[] = [];
let perStep = 0;
for (let i = 0; i < Number(values.steps); i++) {
  const before = calls;
  const t0 = performance.now();
  trainer.step();
  times.push(performance.now() - t0);
  perStep = calls - before;
}
times.sort((a, b) => a - b);
const ms = times[Math.floor(times.length / 2)]!;
console.log(`${values.preset}, N=${n}: host ${ms.toFixed(1)} ms a step (median of ${times.length}), ${perStep} addon calls, ` +
  `${((ms * 1000) / perStep).toFixed(1)} us a call`);
