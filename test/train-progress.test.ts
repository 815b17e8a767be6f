import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatDuration, ProgressLine, progressText } from '../src/train/progress.js';

const fields = (step: number) => ({ step, total: 100, loss: 2.5, lr: 1e-3, tokensPerSecond: 1234.5, etaSeconds: 125 });

test('the progress line shows step/total, loss, lr, tokens/s and ETA', () => {
  assert.equal(progressText(fields(7)), 'step   7/100  loss 2.5000  lr 1.00e-3  1235 tok/s  ETA 2m05s');
  assert.equal(formatDuration(59.4), '59s');
  assert.equal(formatDuration(3725), '1h02m');
  assert.equal(formatDuration(Infinity), '?');
});

test('on a terminal it redraws one line; into a pipe it prints plain lines every N steps', () => {
  let tty = '';
  const onTty = new ProgressLine({ write: (s: string) => (tty += s), isTTY: true }, 10);
  onTty.update(fields(1));
  onTty.update(fields(2));
  onTty.message('step 2: validation loss 2.4');
  onTty.update(fields(3));
  onTty.finish();
  assert.equal(tty.split('\n').length, 3);
  assert.match(tty, /^\r\x1b\[2K\[-{20}\] step {3}1\/100/);
  assert.match(tty, /\[#-{19}\] step {3}3\/100/);
  assert.match(tty, /\r\x1b\[2Kstep 2: validation loss 2\.4\n/);
  let piped = '';
  const onPipe = new ProgressLine({ write: (s: string) => (piped += s) }, 10);
  for (let s = 1; s <= 100; s++) onPipe.update(fields(s));
  onPipe.finish();
  const lines = piped.trim().split('\n');
  assert.deepEqual(lines.map((l) => Number(/step\s+(\d+)/.exec(l)![1])), [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
  assert.ok(!piped.includes('\r') && !piped.includes('\x1b'));
});
