/**
 * Checkpoint directories:
 *
 *   model.safetensors      the weights, by dotted parameter name (the dtype they train in)
 *   config.json            model config, tokenizer spec, training arguments
 *   optimizer.safetensors  AdamW moments, `NAME.m` and `NAME.v` per parameter
 *   trainer-state.json     step, data position, tokens seen, validation history, timing
 *
 * The four are saved as one unit (commit.ts): an interrupted save leaves the previous checkpoint whole.
 * Every file carries the same random save id (safetensors metadata, JSON field), so that files mixed by
 * hand from two saves are refused rather than silently resumed. Loading checks everything and reports
 * the first problem as one InputError naming the file.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { check, InputError } from '../errors.js';
import {
  fromFloat32, fromFloat64, readSafetensors, toFloat32, toFloat64, writeSafetensors, type SafetensorsFile, type StoredTensor,
} from '../io/safetensors.js';
import type { Tensor } from '../tensor/index.js';
import { tokenizerFromSpec, type Tokenizer, type TokenizerSpec } from '../data/index.js';
import { validateConfig, type AnyModelConfig } from '../model/config.js';
import { commitFiles, hasPendingCommit, recoverCommit, type FileContent } from './commit.js';
import type { AdamW } from './optimizer.js';

export const MODEL_FILE = 'model.safetensors';
export const CONFIG_FILE = 'config.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_FILE = 'trainer-state.json';

const FORMAT = 'longnet-checkpoint';
const VERSION = 1;
const ID_KEY = 'longnet.save_id';

/** config.json. `training` holds the arguments of the run that made it (null for imported weights). */
export interface CheckpointConfig<TrainingArgs = Record<string, unknown>> {
  format: typeof FORMAT;
  version: number;
  model: AnyModelConfig;
  tokenizer: TokenizerSpec;
  training: TrainingArgs | null;
}

/** trainer-state.json. */
export interface TrainerState {
  saveId: string;
  /** Optimizer updates done. */
  step: number;
  /** The next training batch (the dataset's resumable position). */
  data: { epoch: number; position: number };
  /** Identifies the token stream trained on: resuming on other data is refused. */
  dataContentHash: string;
  tokens: number;
  /** Seconds spent training, summed over resumed runs. */
  elapsedSeconds: number;
  lastValLoss: number | null;
  bestValLoss: number | null;
  /**
   * Random state beyond the data order. Training itself draws no random numbers (dropout is 0 and the
   * data order is a pure function of seed and epoch), so this records the seed the order derives from.
   */
  random: { dataSeed: number };
  savedAt: string;
}

export interface SaveInput<TrainingArgs> {
  params: ReadonlyMap<string, Tensor>;
  config: CheckpointConfig<TrainingArgs>;
  optimizer?: AdamW;
  state?: Omit<TrainerState, 'saveId' | 'savedAt'>;
}

function stored(data: Float32Array | Float64Array, shape: readonly number[]): StoredTensor {
  return data instanceof Float64Array ? fromFloat64(data, shape) : fromFloat32(data, shape);
}

/** Writes a checkpoint to `dir` as one unit. `hooks` exist for tests of interrupted saves. */
export function saveCheckpoint<TrainingArgs>(
  dir: string, input: SaveInput<TrainingArgs>, hooks: { beforeCommit?: () => void } = {},
): string {
  const saveId = randomBytes(8).toString('hex');
  const metadata = { [ID_KEY]: saveId, format: 'pt' };
  const files = new Map<string, FileContent>();
  const weights = new Map<string, StoredTensor>();
  for (const [name, t] of input.params) weights.set(name, stored(t.toArray() as Float32Array | Float64Array, t.shape));
  files.set(MODEL_FILE, (path) => writeSafetensors(path, weights, metadata));
  files.set(CONFIG_FILE, `${JSON.stringify(input.config, null, 2)}\n`);
  if (input.optimizer !== undefined) {
    const moments = new Map<string, StoredTensor>();
    for (const [name, { data, shape }] of input.optimizer.stateArrays()) moments.set(name, stored(data, shape));
    files.set(OPTIMIZER_FILE, (path) => writeSafetensors(path, moments, { ...metadata, step: String(input.optimizer!.step) }));
  }
  if (input.state !== undefined) {
    const state: TrainerState = { saveId, ...input.state, savedAt: new Date().toISOString() };
    files.set(STATE_FILE, `${JSON.stringify(state, null, 2)}\n`);
  }
  commitFiles(dir, files, hooks);
  return saveId;
}

// ---------------------------------------------------------------------------------------------------
// Loading

/** Finishes an interrupted save if there is one, then checks that `dir` looks like a checkpoint. */
export function openCheckpointDir(dir: string): void {
  let isDir = false;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    throw new InputError(`no checkpoint at ${dir}: no such directory`);
  }
  check(isDir, `no checkpoint at ${dir}: not a directory`);
  if (hasPendingCommit(dir)) {
    try {
      recoverCommit(dir);
    } catch (err) {
      throw new InputError(`${dir}: an interrupted save needs finishing, but ${(err as Error).message}`);
    }
  }
  try {
    statSync(join(dir, CONFIG_FILE));
  } catch {
    throw new InputError(`${dir} is not a checkpoint (no ${CONFIG_FILE})`);
  }
}

function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InputError(`cannot read ${path}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new InputError(`${path}: not valid JSON (${(err as Error).message}); the file is corrupt or truncated`);
  }
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** Reads and validates config.json: format, model config, tokenizer. */
export function readCheckpointConfig<TrainingArgs = Record<string, unknown>>(dir: string): {
  config: CheckpointConfig<TrainingArgs>;
  tokenizer: Tokenizer;
} {
  const path = join(dir, CONFIG_FILE);
  const raw = readJson(path);
  check(isObject(raw) && raw['format'] === FORMAT, `${path}: not a longnet checkpoint config (no "format": "${FORMAT}")`);
  check(raw['version'] === VERSION, `${path}: checkpoint format version ${String(raw['version'])}, this longnet reads version ${VERSION}`);
  check(isObject(raw['model']), `${path}: "model" is missing or not an object`);
  const model = raw['model'] as unknown as AnyModelConfig;
  let tokenizer: Tokenizer;
  try {
    validateConfig(model);
    tokenizer = tokenizerFromSpec(raw['tokenizer']);
  } catch (err) {
    if (err instanceof InputError) throw new InputError(`${path}: ${err.message}`);
    throw err;
  }
  check(
    model.vocabSize >= tokenizer.vocabSize,
    `${path}: the model's vocabulary (${model.vocabSize}) is smaller than the tokenizer's (${tokenizer.vocabSize})`,
  );
  check(raw['training'] === null || raw['training'] === undefined || isObject(raw['training']), `${path}: "training" is not an object`);
  return { config: raw as unknown as CheckpointConfig<TrainingArgs>, tokenizer };
}

function readSafetensorsChecked(path: string): SafetensorsFile {
  try {
    return readSafetensors(path);
  } catch (err) {
    if (err instanceof InputError) {
      const msg = err.message.startsWith(path) || err.message.includes(path) ? err.message : `${path}: ${err.message}`;
      throw new InputError(`${msg} (corrupt or truncated checkpoint file?)`);
    }
    throw err;
  }
}

function floatValues(t: StoredTensor, dtype: Tensor['dtype']): Float32Array | Float64Array {
  return dtype === 'float64' ? toFloat64(t) : toFloat32(t);
}

function checkFinite(data: Float32Array | Float64Array, path: string, name: string): void {
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i]!)) throw new InputError(`${path}: tensor "${name}" holds a non-finite value at index ${i} (corrupt file?)`);
  }
}

/**
 * The tensors of `file` matched one to one against `params`: every parameter present, of the same
 * shape, a float dtype, finite; nothing extra.
 */
function matchTensors(
  file: SafetensorsFile, params: ReadonlyMap<string, Tensor>, what: (name: string) => string[], kind: string,
): Map<string, { data: Float32Array | Float64Array; shape: readonly number[] }> {
  const out = new Map<string, { data: Float32Array | Float64Array; shape: readonly number[] }>();
  const expected = new Set<string>();
  for (const [name, p] of params) {
    for (const key of what(name)) {
      expected.add(key);
      const t = file.tensors.get(key);
      if (t === undefined) {
        throw new InputError(
          `${file.source}: missing ${kind} "${key}" (shape [${p.shape.join(', ')}]); the file does not match config.json`,
        );
      }
      check(
        t.shape.length === p.shape.length && t.shape.every((d, i) => d === p.shape[i]),
        () => `${file.source}: ${kind} "${key}" has shape [${t.shape.join(', ')}] but config.json's model needs [${p.shape.join(', ')}]`,
      );
      check(t.dtype === 'F32' || t.dtype === 'F64' || t.dtype === 'F16' || t.dtype === 'BF16', () => `${file.source}: ${kind} "${key}" is ${t.dtype}, not a float type`);
      const data = floatValues(t, p.dtype);
      checkFinite(data, file.source, key);
      out.set(key, { data, shape: t.shape });
    }
  }
  for (const key of file.tensors.keys()) {
    check(expected.has(key), () => `${file.source}: unexpected tensor "${key}", not in the model of config.json`);
  }
  return out;
}

/** The weights of `dir` for a model whose parameters are `params`, checked (see matchTensors). */
export function readModelWeights(
  dir: string, params: ReadonlyMap<string, Tensor>,
): { weights: Map<string, { data: Float32Array | Float64Array; shape: readonly number[] }>; saveId: string | undefined } {
  const file = readSafetensorsChecked(join(dir, MODEL_FILE));
  return { weights: matchTensors(file, params, (n) => [n], 'parameter'), saveId: file.metadata[ID_KEY] };
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0;
}

function readTrainerState(dir: string): TrainerState {
  const path = join(dir, STATE_FILE);
  const raw = readJson(path);
  check(isObject(raw), `${path}: not a JSON object`);
  const data = raw['data'];
  const lossOrNull = (x: unknown): boolean => x === null || (typeof x === 'number' && Number.isFinite(x));
  check(
    typeof raw['saveId'] === 'string' && isCount(raw['step']) && isObject(data) && isCount(data['epoch']) && isCount(data['position']) &&
      typeof raw['dataContentHash'] === 'string' && isCount(raw['tokens']) &&
      typeof raw['elapsedSeconds'] === 'number' && lossOrNull(raw['lastValLoss']) && lossOrNull(raw['bestValLoss']) &&
      isObject(raw['random']),
    `${path}: missing or malformed fields (corrupt file?)`,
  );
  return raw as unknown as TrainerState;
}

/**
 * What resuming needs beyond the weights: the trainer state and the optimizer moments, checked
 * against the parameters and against the weights' save id.
 */
export function readTrainingState(
  dir: string, params: ReadonlyMap<string, Tensor>, weightsSaveId: string | undefined,
): { state: TrainerState; moments: Map<string, { data: Float32Array | Float64Array; shape: readonly number[] }>; optimizerStep: number } {
  const state = readTrainerState(dir);
  const file = readSafetensorsChecked(join(dir, OPTIMIZER_FILE));
  const ids = [weightsSaveId, file.metadata[ID_KEY]];
  check(
    ids.every((id) => id === state.saveId),
    `${dir}: ${MODEL_FILE}, ${OPTIMIZER_FILE} and ${STATE_FILE} come from different saves (files copied by hand?); cannot resume`,
  );
  const optimizerStep = Number(file.metadata['step']);
  check(isCount(optimizerStep), `${file.source}: missing or bad "step" metadata`);
  const moments = matchTensors(file, params, (n) => [`${n}.m`, `${n}.v`], 'optimizer state');
  return { state, moments, optimizerStep };
}

/** Whether `dir` holds a checkpoint (or the remains of a save) that a new run would overwrite. */
export function holdsCheckpoint(dir: string): boolean {
  for (const name of [CONFIG_FILE, MODEL_FILE, STATE_FILE]) {
    try {
      statSync(join(dir, name));
      return true;
    } catch {
      // keep looking
    }
  }
  return hasPendingCommit(dir);
}
