#!/usr/bin/env bash
# Sourced first on a GPU machine that has CUDA but no Node: unpacks .device/node.tar.xz, checks that the
# prebuilt native/build/longnet_cuda.node loads there (else builds it), and prints the machine's particulars.
# Besides the source tree it needs .device/, native/build/longnet_cuda.node and node_modules/{tsx,esbuild,@esbuild};
# or the run-time dependencies that scripts/device-pack.sh (run here first) puts in .device/node_modules.tar.xz.
mkdir -p /opt/node && tar xJf .device/node.tar.xz -C /opt/node
if [ -f .device/node_modules.tar.xz ]; then tar -xJf .device/node_modules.tar.xz; fi
export PATH=/opt/node/bin:$PATH
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
echo "node $(node --version), $(nvcc --version | tail -1)"
ldconfig -p | grep -E 'libcublasLt.so|libnccl.so' | head -4
if ! node -e "require('./native/build/longnet_cuda.node')" 2>/tmp/addon-load.txt; then
  echo "the carried addon does not load here ($(head -1 /tmp/addon-load.txt)); building it"
  node scripts/build-native.mjs --jobs "$(nproc)" || exit 1
fi
