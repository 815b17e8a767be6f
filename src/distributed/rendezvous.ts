/**
 * The TCP rendezvous of `longnet launch`: one JSON object per line. The launcher of node 0 serves on
 * MASTER_ADDR:MASTER_PORT; each rank joins (rank 0 brings the shared blob, e.g. the NCCL unique id) and,
 * once all WORLD_SIZE ranks are in, every rank receives the blob. The launchers of the other nodes stay
 * connected (a NodeLink each), so that a failure anywhere stops every node: a node's launcher reports
 * its failure, the server tells every node to abort, and a lost connection counts as a failure.
 *
 *   rank  -> server  {type: 'join', rank, worldSize, id?}        server -> rank   {type: 'ready', id} | {type: 'error', message}
 *   node  -> server  {type: 'node', node} | {type: 'failed', message} | {type: 'done'}
 *   server -> node   {type: 'abort', message}
 */
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { InputError } from '../errors.js';

/** Default time a rank, or a node's launcher, may take to arrive (seconds); the env var LONGNET_RDZV_TIMEOUT overrides it. */
export const DEFAULT_RENDEZVOUS_TIMEOUT_S = 30;

type Message = Record<string, unknown> & { type?: unknown };

function send(socket: Socket, message: Message): void {
  if (!socket.destroyed && socket.writable) socket.write(`${JSON.stringify(message)}\n`);
}

/** Calls `onMessage` for each JSON line; a line that is not JSON ends the connection. */
function readLines(socket: Socket, onMessage: (m: Message) => void): void {
  let buffer = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line.trim() === '') continue;
      let m: unknown;
      try {
        m = JSON.parse(line);
      } catch {
        socket.destroy();
        return;
      }
      if (typeof m === 'object' && m !== null) onMessage(m as Message);
    }
  });
}

/** Connects, retrying while nobody listens yet, until `deadline` (ms since the epoch). */
function connectWithRetry(host: string, port: number, deadline: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      const socket = connect({ host, port });
      socket.once('connect', () => {
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        socket.destroy();
        const retry = err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET' || err.code === 'EHOSTUNREACH' || err.code === 'ETIMEDOUT';
        if (retry && Date.now() + 100 < deadline) setTimeout(attempt, 100);
        else reject(new Error(`cannot reach the rendezvous at ${host}:${port} (${err.code ?? err.message})`));
      });
    };
    attempt();
  });
}

export interface RendezvousServerOptions {
  host: string;
  /** 0 picks a free port (see `port`). */
  port: number;
  worldSize: number;
  nnodes: number;
  timeoutMs: number;
  /** Called once when the job fails for a reason the server saw (a rank or node missing, a node's report). */
  onFailure: (message: string) => void;
}

export class RendezvousServer {
  private readonly ranks = new Map<number, Socket>();
  private readonly nodes = new Map<number, Socket>();
  private readonly nodesDone = new Set<number>();
  private id: string | null = null;
  private completed = false;
  private failed = false;
  private rankTimer: NodeJS.Timeout | null = null;
  private readonly nodeTimer: NodeJS.Timeout | null = null;
  private doneWaiters: (() => void)[] = [];

  private constructor(private readonly server: Server, private readonly o: RendezvousServerOptions) {
    if (o.nnodes > 1) {
      this.nodeTimer = setTimeout(() => {
        const missing = range(o.nnodes).filter((n) => n > 0 && !this.nodes.has(n));
        if (missing.length > 0) {
          this.fail(`${plural('node', missing)} never reached the rendezvous at ${o.host}:${this.port} within ${o.timeoutMs / 1000} s`, true);
        }
      }, o.timeoutMs);
    }
  }

  static start(o: RendezvousServerOptions): Promise<RendezvousServer> {
    return new Promise((resolve, reject) => {
      const server = createServer();
      server.once('error', (err: NodeJS.ErrnoException) => {
        reject(new InputError(`cannot serve the rendezvous on ${o.host}:${o.port} (${err.code ?? err.message})`));
      });
      server.listen({ host: o.host, port: o.port }, () => {
        const rdzv = new RendezvousServer(server, o);
        server.on('connection', (socket) => rdzv.accept(socket));
        resolve(rdzv);
      });
    });
  }

  get port(): number {
    const address = this.server.address();
    return typeof address === 'object' && address !== null ? address.port : this.o.port;
  }

  private accept(socket: Socket): void {
    socket.on('error', () => {}); // a peer that vanishes shows up as 'close'
    let role: { rank: number } | { node: number } | null = null;
    readLines(socket, (m) => {
      if (m.type === 'join' && role === null) {
        const rank = Number(m['rank']);
        role = { rank };
        this.join(socket, rank, Number(m['worldSize']), m['id']);
      } else if (m.type === 'node' && role === null) {
        const node = Number(m['node']);
        role = { node };
        if (!(Number.isInteger(node) && node > 0 && node < this.o.nnodes) || this.nodes.has(node)) {
          this.fail(`a launcher joined as node ${String(m['node'])}, but nodes 1..${this.o.nnodes - 1} are expected, once each`, true);
          return;
        }
        this.nodes.set(node, socket);
        if (this.failed) send(socket, { type: 'abort', message: 'the job has already failed' });
      } else if (m.type === 'failed' && role !== null && 'node' in role) {
        this.fail(String(m['message']), true);
      } else if (m.type === 'done' && role !== null && 'node' in role) {
        this.nodesDone.add(role.node);
        this.checkDone();
      }
    });
    socket.on('close', () => {
      if (role === null) return;
      if ('node' in role) {
        if (!this.nodesDone.has(role.node) && !this.failed) this.fail(`lost the launcher of node ${role.node}`, true);
      } else if (!this.completed && this.ranks.get(role.rank) === socket) {
        this.ranks.delete(role.rank); // left before the others arrived: counted as missing
      }
    });
  }

  private join(socket: Socket, rank: number, worldSize: number, id: unknown): void {
    const { worldSize: expected } = this.o;
    const refuse = (message: string): void => {
      send(socket, { type: 'error', message });
      this.fail(message, true);
    };
    if (this.failed) return send(socket, { type: 'error', message: 'the job has already failed' });
    if (this.completed) return refuse(`rank ${rank} joined after the rendezvous completed`);
    if (worldSize !== expected) return refuse(`rank ${rank} has WORLD_SIZE=${worldSize}, the launcher runs ${expected}`);
    if (!(Number.isInteger(rank) && rank >= 0 && rank < expected)) return refuse(`rank ${rank} is outside [0, ${expected})`);
    if (this.ranks.has(rank)) return refuse(`rank ${rank} joined twice`);
    if (rank === 0) {
      if (typeof id !== 'string' || id === '') return refuse('rank 0 joined without the shared id');
      this.id = id;
    }
    this.ranks.set(rank, socket);
    // the clock starts with the first rank: a command that never joins (not a distributed program) is fine
    this.rankTimer ??= setTimeout(() => {
      const missing = range(expected).filter((r) => !this.ranks.has(r));
      this.fail(`rendezvous timed out after ${this.o.timeoutMs / 1000} s: ${plural('rank', missing)} never arrived`, true);
    }, this.o.timeoutMs);
    if (this.ranks.size < expected) return;
    this.completed = true;
    clearTimeout(this.rankTimer);
    for (const s of this.ranks.values()) {
      send(s, { type: 'ready', id: this.id });
      s.end();
    }
  }

  /** Resolves once every other node's launcher reported that its processes finished well. */
  allNodesDone(): Promise<void> {
    return new Promise((resolve) => {
      this.doneWaiters.push(resolve);
      this.checkDone();
    });
  }

  private checkDone(): void {
    if (this.nodesDone.size < this.o.nnodes - 1) return;
    for (const w of this.doneWaiters.splice(0)) w();
  }

  /** The job failed here (a local rank died): tells waiting ranks and every node. */
  abort(message: string): void {
    this.fail(message, false);
  }

  private fail(message: string, notifyOwner: boolean): void {
    if (this.failed) return;
    this.failed = true;
    if (this.rankTimer !== null) clearTimeout(this.rankTimer);
    if (this.nodeTimer !== null) clearTimeout(this.nodeTimer);
    if (!this.completed) for (const s of this.ranks.values()) send(s, { type: 'error', message });
    for (const s of this.nodes.values()) send(s, { type: 'abort', message });
    if (notifyOwner) this.o.onFailure(message);
  }

  close(): void {
    if (this.rankTimer !== null) clearTimeout(this.rankTimer);
    if (this.nodeTimer !== null) clearTimeout(this.nodeTimer);
    for (const s of [...this.ranks.values(), ...this.nodes.values()]) s.end();
    this.server.close();
  }
}

export interface NodeLinkOptions {
  host: string;
  port: number;
  node: number;
  timeoutMs: number;
  /** Called once when the job must stop: the server's message, or a lost connection. */
  onAbort: (message: string) => void;
}

/** The link of a node > 0's launcher to the rendezvous server. */
export class NodeLink {
  private closing = false;

  private constructor(private readonly socket: Socket, o: NodeLinkOptions) {
    let aborted = false;
    const abort = (message: string): void => {
      if (aborted || this.closing) return;
      aborted = true;
      o.onAbort(message);
    };
    socket.on('error', () => {});
    readLines(socket, (m) => {
      if (m.type === 'abort') abort(String(m['message']));
    });
    socket.on('close', () => abort(`lost the launcher of node 0 at ${o.host}:${o.port}`));
  }

  static async connect(o: NodeLinkOptions): Promise<NodeLink> {
    let socket: Socket;
    try {
      socket = await connectWithRetry(o.host, o.port, Date.now() + o.timeoutMs);
    } catch (e) {
      throw new Error(`node ${o.node}: ${(e as Error).message} within ${o.timeoutMs / 1000} s`);
    }
    const link = new NodeLink(socket, o);
    send(socket, { type: 'node', node: o.node });
    return link;
  }

  reportFailure(message: string): void {
    send(this.socket, { type: 'failed', message });
  }

  /** Reports success and closes the link once the report is written. */
  reportDone(): Promise<void> {
    this.closing = true;
    return new Promise((resolve) => {
      this.socket.end(`${JSON.stringify({ type: 'done' })}\n`, () => resolve());
      setTimeout(resolve, 2000).unref();
    });
  }

  close(): void {
    this.closing = true;
    this.socket.destroy();
  }
}

export interface RendezvousResult {
  rank: number;
  size: number;
  localRank: number;
  /** Rank 0's blob, the same on every rank. */
  sharedId: Uint8Array;
}

export interface RendezvousOptions {
  /** Rank 0's blob (e.g. ncclUniqueId); 128 random bytes by default. */
  makeSharedId?: () => Uint8Array;
  /** Overrides LONGNET_RDZV_TIMEOUT (milliseconds). */
  timeoutMs?: number;
}

function readInt(env: NodeJS.ProcessEnv, name: string, min: number): number {
  const text = env[name];
  if (text === undefined || text === '') throw new InputError(`${name} is not set: start the processes with longnet launch`);
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new InputError(`${name}=${text} is not an integer >= ${min}`);
  return n;
}

/** LONGNET_RDZV_TIMEOUT (seconds) in milliseconds, or the default. */
export function rendezvousTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const text = env['LONGNET_RDZV_TIMEOUT'];
  if (text === undefined || text === '') return DEFAULT_RENDEZVOUS_TIMEOUT_S * 1000;
  const s = Number(text);
  if (!(Number.isFinite(s) && s > 0)) throw new InputError(`LONGNET_RDZV_TIMEOUT=${text} is not a positive number of seconds`);
  return s * 1000;
}

/**
 * Joins the rendezvous described by the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK,
 * MASTER_ADDR, MASTER_PORT) and returns rank 0's shared blob once every rank has arrived.
 */
export async function rendezvous(env: NodeJS.ProcessEnv = process.env, options: RendezvousOptions = {}): Promise<RendezvousResult> {
  const size = readInt(env, 'WORLD_SIZE', 1);
  const rank = readInt(env, 'RANK', 0);
  if (rank >= size) throw new InputError(`RANK=${rank} is not below WORLD_SIZE=${size}`);
  const localRank = env['LOCAL_RANK'] === undefined ? rank : readInt(env, 'LOCAL_RANK', 0);
  const host = env['MASTER_ADDR'];
  if (host === undefined || host === '') throw new InputError('MASTER_ADDR is not set: start the processes with longnet launch');
  const port = readInt(env, 'MASTER_PORT', 1);
  const timeoutMs = options.timeoutMs ?? rendezvousTimeoutMs(env);
  // a little longer than the server's own clock, so that its message (which ranks are missing) wins
  const deadline = Date.now() + timeoutMs + 5000;
  const socket = await connectWithRetry(host, port, deadline);
  const id = rank === 0 ? Buffer.from((options.makeSharedId ?? (() => randomBytes(128)))()).toString('base64') : undefined;
  return new Promise<RendezvousResult>((resolve, reject) => {
    let settled = false;
    const finish = (error: Error | null, sharedId?: Uint8Array): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error !== null) reject(error);
      else resolve({ rank, size, localRank, sharedId: sharedId! });
    };
    const timer = setTimeout(() => finish(new Error(`rendezvous at ${host}:${port} timed out after ${timeoutMs / 1000} s`)),
      Math.max(0, deadline - Date.now()));
    socket.on('error', () => {});
    readLines(socket, (m) => {
      if (m.type === 'ready' && typeof m['id'] === 'string') finish(null, new Uint8Array(Buffer.from(m['id'], 'base64')));
      else if (m.type === 'error') finish(new Error(`rendezvous failed: ${String(m['message'])}`));
    });
    socket.on('close', () => finish(new Error(`the rendezvous at ${host}:${port} closed the connection`)));
    send(socket, { type: 'join', rank, worldSize: size, ...(id !== undefined ? { id } : {}) });
  });
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

function plural(word: string, items: readonly number[]): string {
  return `${word}${items.length === 1 ? '' : 's'} ${items.join(', ')}`;
}

/**
 * The rendezvous with `count` ids of equal length made on rank 0 by `makeId` (e.g. one NCCL id for the world
 * and one for each group), sent as one blob; `id(i)` is the i-th on every rank.
 */
export async function rendezvousIds(
  env: NodeJS.ProcessEnv, count: number, makeId: () => Uint8Array,
): Promise<RendezvousResult & { id(i: number): Uint8Array }> {
  const r = await rendezvous(env, {
    makeSharedId: () => {
      const ids = Array.from({ length: count }, makeId);
      const blob = new Uint8Array(ids.reduce((n, id) => n + id.length, 0));
      let at = 0;
      for (const id of ids) {
        blob.set(id, at);
        at += id.length;
      }
      return blob;
    },
  });
  const length = r.sharedId.length / count;
  return { ...r, id: (i) => r.sharedId.slice(i * length, (i + 1) * length) };
}
