import type { Backend, Device } from './backend.js';
import { CpuBackend } from './cpu/cpu-backend.js';

const backends = new Map<Device, Backend>([['cpu', new CpuBackend()]]);
const loaders = new Map<Device, () => Backend>();

/** Lets an optional backend (the CUDA addon) register itself without the core importing it. */
export function registerBackendLoader(device: Device, load: () => Backend): void {
  loaders.set(device, load);
}

export function getBackend(device: Device): Backend {
  let backend = backends.get(device);
  if (!backend) {
    const load = loaders.get(device);
    if (!load) throw new Error(`no backend for device '${device}'`);
    backend = load();
    backends.set(device, backend);
  }
  return backend;
}

/** The device used when none is named: `LONGNET_DEVICE`, else the CPU. */
export function defaultDevice(): Device {
  const env = process.env['LONGNET_DEVICE'];
  if (env === 'cuda' || env === 'cpu') return env;
  return 'cpu';
}
