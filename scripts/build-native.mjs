#!/usr/bin/env node
// Builds the CUDA addon native/build/longnet_cuda.node with nvcc (no node-gyp).
//
//   node scripts/build-native.mjs [--optional] [--verbose] [--clean] [--jobs N]
//
// --optional  never fail: print one line and exit 0 when CUDA or a compiler is missing, or the build
//             breaks (used by `npm install`, so that machines without CUDA install fine).
// --verbose   print the commands and ptxas's register/spill report for every kernel.
// Environment: CUDA_HOME or CUDA_PATH (toolkit root), NVCC (compiler path), LONGNET_NODE_INCLUDE (Node's
// headers), LONGNET_CUDA_ARCHS (default "90a,80": sm_90a and sm_80 machine code, plus compute_90 PTX),
// LONGNET_SKIP_NATIVE=1 (skip the build).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = join(root, 'native', 'src');
const buildDir = join(root, 'native', 'build');
const objDir = join(buildDir, 'obj');
const output = join(buildDir, 'longnet_cuda.node');
const logFile = join(buildDir, 'build.log');

const args = process.argv.slice(2);
const optional = args.includes('--optional');
const verbose = args.includes('--verbose');
const jobsArg = args.indexOf('--jobs');
const jobs = jobsArg >= 0 ? Number(args[jobsArg + 1]) : Math.max(1, Math.min(cpus().length, 8));

function skip(reason) {
  console.log(`longnet: CUDA addon not built: ${reason} (the CPU backend works without it)`);
  process.exit(0);
}

// A failed compile or link: the compiler's output goes to native/build/build.log; --optional prints one line.
function die(reason, log) {
  if (log) {
    mkdirSync(buildDir, { recursive: true });
    writeFileSync(logFile, log);
  }
  if (optional) skip(log ? `${reason} (see ${relative(root, logFile)})` : reason);
  console.error(`longnet: CUDA addon build failed: ${reason}${log ? `\n${log}` : ''}`);
  process.exit(1);
}

function findNvcc() {
  const candidates = [];
  if (process.env.NVCC) candidates.push(process.env.NVCC);
  for (const home of [process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda']) {
    if (home) candidates.push(join(home, 'bin', 'nvcc'));
  }
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir) candidates.push(join(dir, 'nvcc'));
  return candidates.find((p) => existsSync(p));
}

function findNodeInclude() {
  const candidates = [
    process.env.LONGNET_NODE_INCLUDE,
    join(dirname(process.execPath), '..', 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ].filter(Boolean);
  return candidates.find((p) => existsSync(join(p, 'node_api.h')));
}

function listSources(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listSources(path));
    else if (/\.(cu|cc)$/.test(entry.name)) out.push(path);
  }
  return out.sort();
}

function listHeaders(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listHeaders(path));
    else if (/\.(h|cuh)$/.test(entry.name)) out.push(path);
  }
  return out.sort();
}

// What an object is built from: the command line, the source and every header, by content. An object is
// up to date when the key recorded beside it (read before its compile began) is the key now, so a change
// of flags rebuilds, and so does a source edited while it was being compiled.
function digest(parts) {
  const h = createHash('sha256');
  for (const part of parts) h.update(part).update('\0');
  return h.digest('hex');
}

function run(cmd, argv) {
  if (verbose) console.log([cmd, ...argv].join(' '));
  return new Promise((resolvePromise) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.on('data', (d) => { text += d; });
    child.stderr.on('data', (d) => { text += d; });
    child.on('error', (e) => resolvePromise({ code: 1, text: String(e) }));
    child.on('close', (code) => resolvePromise({ code: code ?? 1, text }));
  });
}

if (process.env.LONGNET_SKIP_NATIVE === '1') skip('LONGNET_SKIP_NATIVE=1');
const nvcc = findNvcc();
if (!nvcc) (optional ? skip : die)('nvcc not found (set CUDA_HOME or NVCC)');
const nodeInclude = findNodeInclude();
if (!nodeInclude) (optional ? skip : die)("Node's headers (node_api.h) not found (set LONGNET_NODE_INCLUDE)");

if (args.includes('--clean')) rmSync(buildDir, { recursive: true, force: true });
mkdirSync(objDir, { recursive: true });

const archs = (process.env.LONGNET_CUDA_ARCHS ?? '90a,80').split(',').map((a) => a.trim()).filter(Boolean);
const gencode = archs.flatMap((a) => ['-gencode', `arch=compute_${a},code=sm_${a}`]);
// PTX of the newest target too, so that later GPUs can run the addon after a JIT compile
// (arch-specific targets such as 90a run on their own chip only, so the PTX is the plain one)
const ptxArch = archs[0].replace(/a$/, '');
gencode.push('-gencode', `arch=compute_${ptxArch},code=compute_${ptxArch}`);
const common = [
  '-std=c++20', '-O3', '-Xcompiler', '-fPIC,-fvisibility=hidden', `-I${nodeInclude}`, `-I${srcDir}`,
  '-DNAPI_VERSION=8', '-DNODE_GYP_MODULE_NAME=longnet_cuda',
];

// ptxas's report (--verbose) changes no object, so it stays out of the key
const compileArgs = (source, report = false) =>
  [...common, ...(source.endsWith('.cu') ? [...gencode, '-lineinfo', ...(report ? ['-Xptxas', '-v'] : [])] : [])];
const headersDigest = digest(listHeaders(srcDir).flatMap((h) => [relative(srcDir, h), readFileSync(h)]));
const sources = listSources(srcDir);
const objects = sources.map((s) => join(objDir, relative(srcDir, s).replace(/[/\\]/g, '_') + '.o'));
const keyFile = (object) => `${object}.key`;
const stale = sources
  .map((source, i) => ({ source, object: objects[i], key: digest([nvcc, ...compileArgs(source), readFileSync(source), headersDigest]) }))
  .filter(({ object, key }) => !existsSync(object) || !existsSync(keyFile(object)) || readFileSync(keyFile(object), 'utf8') !== key);

let failed = null;
let next = 0;
async function worker() {
  while (next < stale.length && !failed) {
    const { source, object, key } = stale[next++];
    rmSync(keyFile(object), { force: true });
    const argv = [...compileArgs(source, verbose), '-c', source, '-o', object];
    const started = Date.now();
    const r = await run(nvcc, argv);
    if (r.code !== 0) {
      failed = { source: relative(root, source), text: r.text };
      rmSync(object, { force: true });
      return;
    }
    writeFileSync(keyFile(object), key);
    console.log(`  compiled ${relative(root, source)} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    if (verbose && r.text.trim()) console.log(r.text.trim());
  }
}
await Promise.all(Array.from({ length: Math.min(jobs, Math.max(1, stale.length)) }, worker));
if (failed) die(`compiling ${failed.source} failed`, failed.text);

const needLink = stale.length > 0 || !existsSync(output) || objects.some((o) => statSync(o).mtimeMs > statSync(output).mtimeMs);
if (needLink) {
  const tmp = `${output}.tmp`;
  // the CUDA runtime is linked statically, so the addon needs only the driver (libcuda) at run time;
  // cuBLASLt and NCCL are opened with dlopen when first used
  const r = await run(nvcc, ['-shared', '-cudart', 'static', '-o', tmp, ...objects, '-ldl', '-lpthread', '-lrt']);
  if (r.code !== 0) die('linking failed', r.text);
  renameSync(tmp, output);
}
console.log(`longnet: CUDA addon ${needLink ? 'built' : 'up to date'}: ${relative(root, output)} (${archs.map((a) => `sm_${a}`).join(', ')})`);
