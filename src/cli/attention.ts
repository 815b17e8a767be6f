/**
 * `longnet attention`: runs dilated attention on q, k, v read from a safetensors file and writes the
 * output, its log-sum-exp and (given an upstream gradient `do`) the gradients, for checking the operator
 * against other implementations.
 */
import type { HeadOffsets } from '../backend/backend.js';
import { InputError } from '../errors.js';
import { checkWritableTarget } from '../io/atomic.js';
import {
  fromFloat32, fromFloat64, getTensor, readSafetensors, toFloat32, toFloat64, writeSafetensors,
  type SafetensorsFile, type StoredTensor, type TensorMap,
} from '../io/safetensors.js';
import type { Tensor } from '../tensor/index.js';
import type { Args, Command } from './command.js';
import { parseChoice, parseFiniteNumber, parsePositiveIntList, readSchedule } from './values.js';

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);
const HEAD_OFFSETS: readonly HeadOffsets[] = ['paper', 'blocked'];

interface Options {
  input: string;
  output: string;
  segmentLengths: number[];
  dilationRates: number[];
  causal: boolean;
  scale: number | undefined;
  headOffsets: HeadOffsets;
  float64: boolean;
  /** Sequence parallelism over this many in-process ranks; undefined: one device. */
  ranks: number | undefined;
}

/** Everything that can be checked before reading a file, with errors naming the flag. */
function readOptions(args: Args): Options {
  const { segmentLengths, dilationRates } = readSchedule(args);
  const scaleText = args.string('scale');
  const headText = args.string('head-offsets');
  const ranksText = args.string('ranks');
  return {
    input: args.requireString('in'),
    output: args.requireString('out'),
    segmentLengths,
    dilationRates,
    causal: args.boolean('causal'),
    scale: scaleText === undefined ? undefined : parseFiniteNumber('scale', scaleText),
    headOffsets: headText === undefined ? 'paper' : parseChoice('head-offsets', headText, HEAD_OFFSETS),
    float64: args.boolean('float64'),
    ranks: ranksText === undefined ? undefined : parseRanks(ranksText),
  };
}

function parseRanks(text: string): number {
  const list = parsePositiveIntList('ranks', text);
  if (list.length !== 1) throw new InputError(`--ranks: "${text}" is not a positive integer`);
  return list[0]!;
}

/** Checks dtype and rank of one input tensor; `where` names it in errors. */
function checkInput(t: StoredTensor, where: string): void {
  if (!FLOAT_DTYPES.has(t.dtype)) {
    throw new InputError(`${where} is ${t.dtype}; expected a float dtype (F32, F16, BF16 or F64)`);
  }
  if (t.shape.length !== 4) {
    throw new InputError(`${where} has shape [${t.shape.join(', ')}]; expected 4 dimensions [B, N, H, D]`);
  }
  if (t.shape.includes(0)) throw new InputError(`${where} has an empty dimension: shape [${t.shape.join(', ')}]`);
}

/** The values of a tensor, refusing NaN and infinities with the index of the first one. */
function finiteValues(t: StoredTensor, where: string, float64: boolean): Float32Array | Float64Array {
  const values = float64 ? toFloat64(t) : toFloat32(t);
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    if (Number.isFinite(x)) continue;
    const index: number[] = [];
    let rest = i;
    for (let d = t.shape.length - 1; d >= 0; d--) {
      index.unshift(rest % t.shape[d]!);
      rest = Math.floor(rest / t.shape[d]!);
    }
    const what = Number.isNaN(x) ? 'NaN' : x > 0 ? 'Infinity' : '-Infinity';
    throw new InputError(`${where} holds ${what} at [${index.join(', ')}]`);
  }
  return values;
}

interface Inputs {
  shape: number[];
  q: Float32Array | Float64Array;
  k: Float32Array | Float64Array;
  v: Float32Array | Float64Array;
  dO: Float32Array | Float64Array | null;
}

function loadInputs(file: SafetensorsFile, float64: boolean): Inputs {
  const where = (name: string) => `${file.source}: tensor "${name}"`;
  const q = getTensor(file, 'q');
  const k = getTensor(file, 'k');
  const v = getTensor(file, 'v');
  const dO = file.tensors.get('do') ?? null;
  checkInput(q, where('q'));
  const expected = `[${q.shape.join(', ')}]`;
  for (const [name, t] of [['k', k], ['v', v], ['do', dO]] as const) {
    if (t === null) continue;
    checkInput(t, where(name));
    if (`[${t.shape.join(', ')}]` !== expected) {
      throw new InputError(`${where(name)} has shape [${t.shape.join(', ')}] but "q" has ${expected}`);
    }
  }
  return {
    shape: q.shape,
    q: finiteValues(q, where('q'), float64),
    k: finiteValues(k, where('k'), float64),
    v: finiteValues(v, where('v'), float64),
    dO: dO === null ? null : finiteValues(dO, where('do'), float64),
  };
}

/** Runs the operator (and its backward when `do` is given) and returns the tensors to write. */
async function compute(inputs: Inputs, opts: Options): Promise<Map<string, Float32Array | Float64Array>> {
  // Loaded here, after flags and files are checked, so that bad input fails fast.
  const [{ dilatedAttention }, { Tensor }] = await Promise.all([
    import('../attention/dilated.js'), import('../tensor/index.js'),
  ]);
  const { shape } = inputs;
  if (opts.ranks !== undefined) {
    // --ranks P: the same outputs, computed by sequence parallelism over P ranks in this process
    const { attentionOnRanks } = await import('../distributed/attention-on-ranks.js');
    return attentionOnRanks(shape, inputs.q, inputs.k, inputs.v, inputs.dO, {
      segmentLengths: opts.segmentLengths, dilationRates: opts.dilationRates, causal: opts.causal, headOffsets: opts.headOffsets,
      ...(opts.scale !== undefined ? { scale: opts.scale } : {}),
    }, opts.ranks);
  }
  const withGrad = inputs.dO !== null;
  const created: Tensor[] = [];
  const make = (data: Float32Array | Float64Array, requiresGrad: boolean): Tensor => {
    const t = Tensor.fromArray(data, shape, { requiresGrad });
    created.push(t);
    return t;
  };
  try {
    const q = make(inputs.q, withGrad);
    const k = make(inputs.k, withGrad);
    const v = make(inputs.v, withGrad);
    const { output, lse } = dilatedAttention(q, k, v, {
      segmentLengths: opts.segmentLengths,
      dilationRates: opts.dilationRates,
      causal: opts.causal,
      headOffsets: opts.headOffsets,
      ...(opts.scale !== undefined ? { scale: opts.scale } : {}),
    });
    created.push(output, lse);
    const out = new Map<string, Float32Array | Float64Array>();
    out.set('o', output.toArray() as Float32Array | Float64Array);
    out.set('lse', lse.toArray() as Float32Array | Float64Array);
    if (inputs.dO !== null) {
      const dO = make(inputs.dO, false);
      output.backward(dO);
      for (const [name, t] of [['dq', q], ['dk', k], ['dv', v]] as const) {
        if (t.grad === null) throw new Error(`no gradient reached ${name.slice(1)}`);
        created.push(t.grad);
        out.set(name, t.grad.toArray() as Float32Array | Float64Array);
      }
    }
    return out;
  } finally {
    for (const t of created) t.dispose();
  }
}

async function run(args: Args): Promise<void> {
  const opts = readOptions(args);
  checkWritableTarget(opts.output);
  const file = readSafetensors(opts.input, ['q', 'k', 'v', 'do']);
  const inputs = loadInputs(file, opts.float64);
  const results = await compute(inputs, opts);
  const [b, n, h, d] = inputs.shape as [number, number, number, number];
  const tensors: TensorMap = {};
  for (const [name, data] of results) {
    const shape = name === 'lse' ? [b, n, h] : [b, n, h, d];
    tensors[name] = data instanceof Float64Array
      ? fromFloat64(data, shape, opts.float64 ? 'F64' : 'F32')
      : fromFloat32(data, shape);
  }
  const metadata = {
    segments: opts.segmentLengths.join(','),
    dilations: opts.dilationRates.join(','),
    causal: String(opts.causal),
    scale: String(opts.scale ?? 1 / Math.sqrt(d)),
    head_offsets: opts.headOffsets,
    precision: opts.float64 ? 'float64' : 'float32',
  };
  writeSafetensors(opts.output, tensors, metadata);
}

export const command: Command = {
  name: 'attention',
  summary: 'run dilated attention (and its gradients) on q, k, v from a safetensors file',
  flags: {
    in: { type: 'string', value: 'FILE', required: true, description: 'safetensors file with q, k, v [B, N, H, D] (F32, F16, BF16 or F64) and optionally do' },
    out: { type: 'string', value: 'FILE', required: true, description: 'safetensors file to write (replaced atomically)' },
    segments: { type: 'string', value: 'LIST', required: true, description: 'segment lengths w, comma-separated (e.g. 2048,4096)' },
    dilations: { type: 'string', value: 'LIST', required: true, description: 'dilation rates r, one per segment length (e.g. 1,2)' },
    causal: { type: 'boolean', description: 'causal masking within segments' },
    scale: { type: 'string', value: 'S', description: 'softmax scale', defaultText: '1/sqrt(D)' },
    'head-offsets': { type: 'string', value: 'paper|blocked', description: "which residue each head takes: paper (h mod r) or blocked (torchscale's)", defaultText: 'paper' },
    float64: { type: 'boolean', description: 'compute in float64 and write F64 outputs' },
    ranks: { type: 'string', value: 'P', description: 'split the sequence over P ranks run in this process (sequence parallelism); same outputs' },
  },
  details: [
    'Writes o [B, N, H, D] and lse [B, N, H] (natural log; -inf where a row sees no key), as F32',
    '(F64 with --float64). When IN holds do (the gradient of a loss with respect to o), also writes',
    'dq, dk, dv. The configuration is recorded in the output metadata.',
  ].join('\n'),
  run,
};
