// --activations: which activation dtype a training run takes, and the refusals that name the reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InputError } from '../src/errors.js';
import { mergeResumeArgs, resolveActivations, resolveArgs, type TrainArgs } from '../src/train/run.js';

test('auto takes bf16 on cuda with one rank a sequence, fp32 elsewhere; explicit choices win', () => {
  assert.equal(resolveActivations('auto', 'cuda', 1, 'dilated'), 'bfloat16');
  assert.equal(resolveActivations('auto', 'cuda', 1, 'dense'), 'bfloat16');
  assert.equal(resolveActivations('auto', 'cuda', 2, 'dilated'), 'float32');
  assert.equal(resolveActivations('auto', 'cuda', 1, 'sparse-fixed'), 'float32');
  assert.equal(resolveActivations('auto', 'cpu', 1, 'dilated'), 'float32');
  assert.equal(resolveActivations('fp32', 'cuda', 1, 'dilated'), 'float32');
  assert.equal(resolveActivations('bf16', 'cuda', 1, 'dilated'), 'bfloat16');
});

test('bf16 where it cannot run is an InputError naming the reason', () => {
  const fails = (fn: () => unknown, pattern: RegExp): void => {
    assert.throws(fn, (e: unknown) => e instanceof InputError && pattern.test(e.message));
  };
  fails(() => resolveArgs({ activations: 'bf16' }), /--activations bf16 needs --device cuda/);
  fails(() => resolveActivations('bf16', 'cuda', 2, 'dilated'), /--activations bf16 is not available with --seq-parallel > 1/);
  fails(() => resolveActivations('bf16', 'cuda', 1, 'sparse-fixed'), /sparse fixed attention/);
  fails(() => resolveArgs({ activations: 'half' as never }), /--activations: half is not auto, fp32, bf16/);
  assert.equal(resolveArgs({}).activations, 'auto');
});

test('a resumed run may change --activations; a checkpoint from before the flag resumes with auto', () => {
  const saved = resolveArgs({ device: 'cuda' });
  const { activations: _, ...older } = saved;
  assert.equal(mergeResumeArgs(older as TrainArgs, {}, 'runs/x').activations, 'auto');
  assert.equal(mergeResumeArgs(saved, { activations: 'fp32' }, 'runs/x').activations, 'fp32');
});
