import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ABI_VERSION, type NativeAddon } from './native.js';

export type CudaStatus = { ok: true } | { ok: false; reason: string };
export type AddonLoad = { ok: true; addon: NativeAddon } | { ok: false; reason: string };

const ADDON_FILE = join('native', 'build', 'longnet_cuda.node');

/** Where the built addon is: LONGNET_CUDA_ADDON, else native/build above this module (src/ or dist/src/). */
export function addonPath(): string | undefined {
  const override = process.env['LONGNET_CUDA_ADDON'];
  if (override) return override;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, ADDON_FILE);
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return undefined;
}

function firstLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.split('\n')[0]!.trim();
}

/**
 * Loads the addon at `path` and asks it whether a GPU can be used. Never throws: every failure is one
 * line saying why (not built, cannot load, no driver, no GPU).
 */
export function inspectAddon(path: string | undefined): AddonLoad {
  if (path === undefined) return { ok: false, reason: 'native addon not built (run npm run build:native)' };
  if (!existsSync(path)) return { ok: false, reason: `native addon not found at ${path} (run npm run build:native)` };
  let addon: NativeAddon;
  try {
    addon = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (e) {
    return { ok: false, reason: `native addon failed to load: ${firstLine(e)}` };
  }
  if (addon.abiVersion !== ABI_VERSION) {
    return { ok: false, reason: 'native addon is out of date (run npm run build:native)' };
  }
  try {
    const probe = addon.probe();
    if (!probe.ok) return { ok: false, reason: probe.reason };
  } catch (e) {
    return { ok: false, reason: firstLine(e) };
  }
  return { ok: true, addon };
}

let loaded: AddonLoad | undefined;

/** The addon of this process, loaded once. */
export function loadAddon(): AddonLoad {
  loaded ??= inspectAddon(addonPath());
  return loaded;
}

/** Whether the CUDA backend can run here; when not, `reason` is one line. */
export function cudaAvailable(): CudaStatus {
  const r = loadAddon();
  return r.ok ? { ok: true } : { ok: false, reason: r.reason };
}
