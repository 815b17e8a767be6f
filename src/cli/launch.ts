/**
 * `longnet launch`: runs a command once per process of this node with torchrun's environment, serves
 * (node 0) or joins the TCP rendezvous, and stops everything on the first failure.
 */
import { InputError } from '../errors.js';
import type { Args, Command } from './command.js';
import { parseFiniteNumber, parsePositiveIntList } from './values.js';

function positiveInt(args: Args, flag: string, fallback: number): number {
  const text = args.string(flag);
  if (text === undefined) return fallback;
  const list = parsePositiveIntList(flag, text);
  if (list.length !== 1) throw new InputError(`--${flag}: "${text}" is not a positive integer`);
  return list[0]!;
}

function seconds(args: Args, flag: string, fallback: number): number {
  const text = args.string(flag);
  if (text === undefined) return fallback;
  const s = parseFiniteNumber(flag, text);
  if (s <= 0) throw new InputError(`--${flag}: "${text}" is not a positive number of seconds`);
  return s;
}

async function run(args: Args): Promise<void> {
  const [command, ...rest] = args.positionals;
  if (command === undefined) throw new InputError('missing the command to run (longnet launch [flags] -- COMMAND [ARGS...])');
  const nprocPerNode = positiveInt(args, 'nproc-per-node', 1);
  const nnodes = positiveInt(args, 'nnodes', 1);
  const nodeRankText = args.string('node-rank') ?? '0';
  if (!/^\d+$/.test(nodeRankText) || Number(nodeRankText) >= nnodes) {
    throw new InputError(`--node-rank: "${nodeRankText}" is not an integer in [0, ${nnodes})`);
  }
  const nodeRank = Number(nodeRankText);
  const masterAddr = args.string('master-addr') ?? '127.0.0.1';
  const portText = args.string('master-port') ?? '29500';
  const masterPort = Number(portText);
  if (!/^\d+$/.test(portText) || masterPort > 65535) throw new InputError(`--master-port: "${portText}" is not a port number`);
  if (masterPort === 0 && nnodes > 1) throw new InputError('--master-port 0 (any free port) works on one node only');
  const { DEFAULT_RENDEZVOUS_TIMEOUT_S } = await import('../distributed/rendezvous.js');
  const { launch } = await import('../distributed/launcher.js');
  const result = await launch({
    nprocPerNode, nnodes, nodeRank, masterAddr, masterPort, command, args: rest,
    rendezvousTimeoutMs: 1000 * seconds(args, 'rdzv-timeout', DEFAULT_RENDEZVOUS_TIMEOUT_S),
    killGraceMs: 1000 * seconds(args, 'kill-grace', 5),
  });
  if (!result.ok) {
    process.stderr.write(`longnet launch: ${result.message}\n`);
    // the frame maps thrown errors to 1 (internal) or 2 (input); a failed job is neither
    process.exit(result.exitCode);
  }
}

export const command: Command = {
  name: 'launch',
  summary: 'run a command once per process (sequence/data parallel jobs), torchrun style',
  positionals: '-- COMMAND [ARGS...]',
  flags: {
    'nproc-per-node': { type: 'string', value: 'P', description: 'processes on this node (one per GPU)', defaultText: '1' },
    nnodes: { type: 'string', value: 'M', description: 'number of nodes', defaultText: '1' },
    'node-rank': { type: 'string', value: 'R', description: 'this node, 0..M-1 (node 0 serves the rendezvous)', defaultText: '0' },
    'master-addr': { type: 'string', value: 'ADDR', description: "node 0's address", defaultText: '127.0.0.1' },
    'master-port': { type: 'string', value: 'PORT', description: 'rendezvous port on node 0 (0: any free port, one node only)', defaultText: '29500' },
    'rdzv-timeout': { type: 'string', value: 'S', description: 'seconds the ranks (from the first arrival) and nodes may take to reach the rendezvous', defaultText: '30' },
    'kill-grace': { type: 'string', value: 'S', description: 'seconds between SIGTERM and SIGKILL when stopping processes', defaultText: '5' },
  },
  details: [
    'Each process gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR and MASTER_PORT',
    '(torchrun\'s names) and LONGNET_RDZV_TIMEOUT. Processes meet at the TCP rendezvous on MASTER_ADDR:MASTER_PORT,',
    'where rank 0 hands every rank a shared id (the NCCL unique id). When a process exits non-zero or a rank or',
    'node does not arrive in time, every process of every node is stopped and the launcher exits non-zero with',
    'one line saying what happened. Run the same command on every node with its --node-rank.',
  ].join('\n'),
  run,
};
