/**
 * `longnet launch`: runs a command once per process with torchrun's environment (RANK, WORLD_SIZE,
 * LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT) and watches the processes.
 * The launcher of node 0 serves the rendezvous (rendezvous.ts); those of other nodes connect to it.
 *
 * Failure policy: the first failure anywhere (a process that exits non-zero or is killed, a rank or
 * node that does not arrive in time, a lost node) stops every process of every node: SIGTERM to each
 * process group, SIGKILL after a grace period, and the launcher returns one message. Each process runs
 * in its own process group so that whatever it started goes too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { NodeLink, RendezvousServer } from './rendezvous.js';

export interface LaunchOptions {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  /** 0 (node 0 only): any free port, passed on in MASTER_PORT. */
  masterPort: number;
  command: string;
  args: readonly string[];
  /** How long ranks (from the first one's arrival) and nodes may take to reach the rendezvous. */
  rendezvousTimeoutMs: number;
  /** Between SIGTERM and SIGKILL when stopping processes. */
  killGraceMs: number;
  /** The environment the processes inherit (default process.env). */
  env?: NodeJS.ProcessEnv;
}

export interface LaunchResult {
  ok: boolean;
  /** One line: what failed and what was stopped (empty on success). */
  message: string;
  /** 0, 1 on a failure, 130 or 143 when interrupted by SIGINT or SIGTERM. */
  exitCode: number;
}

interface Child {
  readonly rank: number;
  readonly localRank: number;
  readonly process: ChildProcess;
  exited: boolean;
}

/** Sends `signal` to the child's process group (and the child itself if the group is gone). */
function signalGroup(child: Child, signal: NodeJS.Signals): void {
  const pid = child.process.pid;
  if (pid === undefined || child.exited) return;
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      child.process.kill(signal);
    } catch {
      // already gone
    }
  }
}

function describeExit(child: Child, code: number | null, signal: NodeJS.Signals | null): string {
  const who = `rank ${child.rank} (local rank ${child.localRank})`;
  return signal !== null ? `${who} was killed by ${signal}` : `${who} exited with code ${code}`;
}

/** Runs the processes of this node until they all finish or the job fails. */
export async function launch(o: LaunchOptions): Promise<LaunchResult> {
  const worldSize = o.nnodes * o.nprocPerNode;
  const children: Child[] = [];
  let failure: string | null = null;
  let stopped = 0;
  let killTimer: NodeJS.Timeout | null = null;
  let settle!: (r: LaunchResult) => void;
  const result = new Promise<LaunchResult>((resolve) => { settle = resolve; });
  let server: RendezvousServer | null = null;
  let link: NodeLink | null = null;
  let interruptedBy: NodeJS.Signals | null = null;

  const running = (): Child[] => children.filter((c) => !c.exited);
  const finishIfQuiet = (): void => {
    if (running().length > 0 || failure === null) return;
    if (killTimer !== null) clearTimeout(killTimer);
    const others = stopped === 0 ? '' : `; stopped ${stopped} other process${stopped === 1 ? '' : 'es'}`;
    const code = interruptedBy === null ? 1 : interruptedBy === 'SIGINT' ? 130 : 143;
    settle({ ok: false, message: `${failure}${others}`, exitCode: code });
  };
  /** The first failure wins; `remote` ones came from the rendezvous and need not be reported back. */
  const fail = (message: string, remote: boolean): void => {
    if (failure !== null) return;
    failure = message;
    if (!remote) {
      server?.abort(message);
      link?.reportFailure(message);
    }
    const alive = running();
    stopped = alive.length;
    for (const c of alive) signalGroup(c, 'SIGTERM');
    if (alive.length > 0) {
      killTimer = setTimeout(() => { for (const c of running()) signalGroup(c, 'SIGKILL'); }, o.killGraceMs);
    }
    finishIfQuiet();
  };

  let masterPort = o.masterPort;
  try {
    if (o.nodeRank === 0) {
      server = await RendezvousServer.start({
        host: o.masterAddr, port: o.masterPort, worldSize, nnodes: o.nnodes, timeoutMs: o.rendezvousTimeoutMs,
        onFailure: (m) => fail(m, true),
      });
      masterPort = server.port;
    } else {
      link = await NodeLink.connect({
        host: o.masterAddr, port: o.masterPort, node: o.nodeRank, timeoutMs: o.rendezvousTimeoutMs,
        onAbort: (m) => fail(m, true),
      });
    }
  } catch (e) {
    return { ok: false, message: (e as Error).message, exitCode: 1 };
  }

  // while processes run, an exit of the launcher for any reason takes them along
  const killAll = (): void => { for (const c of running()) signalGroup(c, 'SIGKILL'); };
  process.on('exit', killAll);
  // SIGINT/SIGTERM: stop the processes gracefully instead of leaving them behind
  const previous = new Map<NodeJS.Signals, NodeJS.SignalsListener[]>();
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    previous.set(signal, process.listeners(signal) as NodeJS.SignalsListener[]);
    process.removeAllListeners(signal);
    process.on(signal, () => {
      interruptedBy = signal;
      fail(`interrupted by ${signal}`, false);
    });
  }

  for (let local = 0; local < o.nprocPerNode && failure === null; local++) {
    const rank = o.nodeRank * o.nprocPerNode + local;
    const env: NodeJS.ProcessEnv = {
      ...(o.env ?? process.env),
      RANK: String(rank), WORLD_SIZE: String(worldSize), LOCAL_RANK: String(local),
      LOCAL_WORLD_SIZE: String(o.nprocPerNode), GROUP_RANK: String(o.nodeRank),
      MASTER_ADDR: o.masterAddr, MASTER_PORT: String(masterPort),
      LONGNET_RDZV_TIMEOUT: String(o.rendezvousTimeoutMs / 1000),
    };
    const proc = spawn(o.command, [...o.args], { env, stdio: 'inherit', detached: true });
    const child: Child = { rank, localRank: local, process: proc, exited: false };
    children.push(child);
    proc.once('error', (err) => {
      if (child.exited) return;
      child.exited = true;
      fail(`rank ${rank}: cannot start '${o.command}' (${(err as NodeJS.ErrnoException).code ?? err.message})`, false);
      finishIfQuiet();
    });
    proc.once('exit', (code, signal) => {
      if (child.exited) return;
      child.exited = true;
      if (code !== 0) fail(describeExit(child, code, signal), false);
      finishIfQuiet();
      if (failure === null && running().length === 0 && children.length === o.nprocPerNode) void succeed();
    });
  }

  const succeed = async (): Promise<void> => {
    if (server !== null) await server.allNodesDone();
    else if (link !== null) await link.reportDone();
    if (failure === null) settle({ ok: true, message: '', exitCode: 0 });
  };

  try {
    return await result;
  } finally {
    if (killTimer !== null) clearTimeout(killTimer);
    process.removeListener('exit', killAll);
    for (const [signal, listeners] of previous) {
      process.removeAllListeners(signal);
      for (const l of listeners) process.on(signal, l);
    }
    server?.close();
    link?.close();
  }
}
