#!/usr/bin/env node
/** The `longnet` executable. To add a command, add one line to COMMANDS. */
import { runCli, type CommandTable } from './frame.js';

const COMMANDS: CommandTable = {
  attention: { summary: 'run dilated attention (and its gradients) on q, k, v from a safetensors file', load: () => import('./attention.js') },
  train: { summary: 'train a LongNet language model (no flags: the tiny model on lodash.js, about 10 minutes)', load: () => import('./train.js') },
  eval: { summary: 'perplexity of a checkpoint on held-out data at one or more sequence lengths', load: () => import('./eval.js') },
  generate: { summary: 'sample text from a checkpoint (temperature, top-k, top-p; KV cache)', load: () => import('./generate.js') },
  viz: { summary: 'draw which keys each query sees, per pattern and head, as SVG (the paper\'s figures 2 and 3)', load: () => import('./viz.js') },
  launch: { summary: 'run a command once per process (sequence/data parallel jobs), torchrun style', load: () => import('./launch.js') },
};

await runCli(process.argv.slice(2), COMMANDS);
