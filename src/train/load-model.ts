/** Opening a checkpoint for inference (eval, generate): config, tokenizer and weights, all checked. */
import type { Device } from '../backend/backend.js';
import { getBackend } from '../backend/registry.js';
// registers the CUDA backend for --device cuda (its addon is loaded only when that device is used)
import '../backend/cuda/index.js';
import { InputError } from '../errors.js';
import type { Tokenizer } from '../data/index.js';
import { LongNetDecoder } from '../model/index.js';
import { openCheckpointDir, readCheckpointConfig, readModelWeights, type CheckpointConfig } from './checkpoint.js';
import type { TrainArgs } from './run.js';

export interface LoadedModel {
  model: LongNetDecoder;
  tokenizer: Tokenizer;
  config: CheckpointConfig<TrainArgs>;
}

export function loadModel(dir: string, device: Device): LoadedModel {
  try {
    getBackend(device);
  } catch (err) {
    throw new InputError(`--device ${device}: ${(err as Error).message.split('\n')[0]}`);
  }
  openCheckpointDir(dir);
  const { config, tokenizer } = readCheckpointConfig<TrainArgs>(dir);
  const model = new LongNetDecoder(config.model, { device });
  try {
    const { weights } = readModelWeights(dir, model.namedParameters());
    model.loadState(weights);
  } catch (err) {
    model.dispose();
    throw err;
  }
  return { model, tokenizer, config };
}
