import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(import.meta.url), '../..');
const MAIN = join(ROOT, 'src/cli/main.ts');
const FIXTURE = join(ROOT, 'test/launch-fixture.ts');

interface Result { code: number; stdout: string; stderr: string; ms: number }

function launch(args: string[]): Promise<Result> {
  const started = Date.now();
  return new Promise((done) => {
    execFile(process.execPath, ['--import', 'tsx', MAIN, 'launch', ...args], { cwd: ROOT },
      (err, stdout, stderr) => done({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr, ms: Date.now() - started }));
  });
}

function freePort(): Promise<number> {
  return new Promise((done) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => done(port));
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

let dir: string;
before(() => { dir = mkdtempSync(join(tmpdir(), 'longnet-launch-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

const node = process.execPath;
const fixture = [node, '--import', 'tsx', FIXTURE];

test('each process gets the torchrun environment and the launcher exits 0', async () => {
  const print = 'const e = process.env; console.log(JSON.stringify([e.RANK, e.WORLD_SIZE, e.LOCAL_RANK, e.LOCAL_WORLD_SIZE, e.MASTER_ADDR, e.MASTER_PORT]))';
  const r = await launch(['--nproc-per-node', '3', '--master-port', '0', '--', node, '-e', print]);
  assert.equal(r.code, 0, r.stderr);
  const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as string[]).sort((a, b) => Number(a[0]) - Number(b[0]));
  assert.equal(rows.length, 3);
  const port = rows[0]![5]!;
  assert.ok(Number(port) > 0);
  rows.forEach((row, i) => assert.deepEqual(row, [String(i), '3', String(i), '3', '127.0.0.1', port]));
});

test('the ranks meet at the rendezvous and all receive rank 0\'s id', async () => {
  const r = await launch(['--nproc-per-node', '2', '--master-port', '0', '--', ...fixture, 'rendezvous']);
  assert.equal(r.code, 0, r.stderr);
  const got = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { rank: number; size: number; id: string });
  assert.deepEqual(got.map((g) => g.rank).sort(), [0, 1]);
  assert.ok(got.every((g) => g.size === 2 && g.id.length === 256 && g.id === got[0]!.id));
});

test('several ids made on rank 0 reach every rank, each whole and in order', async () => {
  const r = await launch(['--nproc-per-node', '3', '--master-port', '0', '--', ...fixture, 'ids']);
  assert.equal(r.code, 0, r.stderr);
  const got = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { rank: number; ids: string[] });
  assert.deepEqual(got.map((g) => g.rank).sort(), [0, 1, 2]);
  const ids = got[0]!.ids;
  assert.ok(ids.every((id) => id.length === 32), 'each id is 16 bytes');
  assert.equal(new Set(ids).size, 3, 'the three ids differ');
  for (const g of got) assert.deepEqual(g.ids, ids, `rank ${g.rank}`);
});

test('a process that fails stops the others; the launcher says which rank', async () => {
  const pids = mkdtempSync(join(dir, 'pids-'));
  const script = `require('fs').writeFileSync(${JSON.stringify(pids)} + '/' + process.env.RANK, String(process.pid));
    if (process.env.RANK === '2') setTimeout(() => process.exit(7), 300); else setInterval(() => {}, 1000);`;
  const r = await launch(['--nproc-per-node', '3', '--master-port', '0', '--kill-grace', '1', '--', node, '-e', script]);
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, /^longnet launch: rank 2 \(local rank 2\) exited with code 7; stopped 2 other processes$/m);
  assert.ok(r.ms < 15000);
  const written = readdirSync(pids);
  assert.ok(written.length >= 1);
  for (const f of written) assert.ok(!alive(Number(readFileSync(join(pids, f), 'utf8'))), `rank ${f} still runs`);
});

test('a rank that never arrives at the rendezvous times out with a clear message', async () => {
  const r = await launch(['--nproc-per-node', '2', '--master-port', '0', '--rdzv-timeout', '1.5', '--kill-grace', '1', '--', ...fixture, 'absent']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /longnet launch: rendezvous timed out after 1.5 s: rank 1 never arrived; stopped 2 other processes/);
  assert.ok(r.ms < 20000);
});

test('two nodes on loopback: one job, one id; a failure on one node stops both', async () => {
  const port = String(await freePort());
  const nodeArgs = (rank: number): string[] => ['--nnodes', '2', '--node-rank', String(rank), '--nproc-per-node', '2', '--master-port', port];
  const [a, b] = await Promise.all([
    launch([...nodeArgs(0), '--', ...fixture, 'rendezvous']),
    launch([...nodeArgs(1), '--', ...fixture, 'rendezvous']),
  ]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  const got = (a.stdout + b.stdout).trim().split('\n').map((l) => JSON.parse(l) as { rank: number; size: number; id: string });
  assert.deepEqual(got.map((g) => g.rank).sort(), [0, 1, 2, 3]);
  assert.ok(got.every((g) => g.size === 4 && g.id === got[0]!.id));

  const port2 = String(await freePort());
  const script = "if (process.env.RANK === '3') setTimeout(() => process.exit(1), 300); else setInterval(() => {}, 1000);";
  const args2 = (rank: number): string[] => ['--nnodes', '2', '--node-rank', String(rank), '--nproc-per-node', '2', '--master-port', port2, '--kill-grace', '1'];
  const [c, d] = await Promise.all([launch([...args2(0), '--', node, '-e', script]), launch([...args2(1), '--', node, '-e', script])]);
  assert.equal(c.code, 1);
  assert.equal(d.code, 1);
  assert.match(c.stderr, /longnet launch: rank 3 \(local rank 1\) exited with code 1; stopped 2 other processes/);
  assert.match(d.stderr, /longnet launch: rank 3 \(local rank 1\) exited with code 1; stopped 1 other process$/m);
});

test('bad launcher flags are one-line input errors', async () => {
  const [noCommand, badNode] = await Promise.all([
    launch(['--nproc-per-node', '2']),
    launch(['--nnodes', '2', '--node-rank', '2', '--', node, '-e', '']),
  ]);
  assert.equal(noCommand.code, 2);
  assert.match(noCommand.stderr, /missing the command to run/);
  assert.equal(badNode.code, 2);
  assert.match(badNode.stderr, /--node-rank: "2" is not an integer in \[0, 2\)/);
});
