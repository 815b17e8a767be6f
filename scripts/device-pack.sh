#!/usr/bin/env bash
# Run HERE (not on the GPU machine), before a device run that trains or benchmarks: packs into
# .device/node_modules.tar.xz the run-time dependencies the GPU machine lacks, trimmed and compressed to
# fit the transfer limit (js-tiktoken with only the cl100k_base ranks; lodash whole, as the default and
# benchmark corpus; hyparquet and its codecs; tsx and esbuild to run TypeScript). scripts/device-setup.sh
# unpacks them into node_modules there. Carry `.device` and `native/build/longnet_cuda.node`.
#   bash scripts/device-pack.sh [--experiments]
# --experiments adds the experiments' corpus (the typescript package's lib/typescript.js, 9.1 MB) for
# scripts/device-experiments.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dst=$stage/node_modules
mkdir -p "$dst/js-tiktoken/dist/ranks"
cp node_modules/js-tiktoken/package.json "$dst/js-tiktoken/"
cp node_modules/js-tiktoken/dist/lite.js node_modules/js-tiktoken/dist/chunk-*.js "$dst/js-tiktoken/dist/"
cp node_modules/js-tiktoken/dist/ranks/cl100k_base.js "$dst/js-tiktoken/dist/ranks/"
for m in base64-js lodash hyparquet hyparquet-compressors hysnappy fzstd tsx esbuild @esbuild; do
  cp -r "node_modules/$m" "$dst/"
done
rm -f "$dst/esbuild/bin/esbuild"  # a copy of the @esbuild binary (a hard link in node_modules), unused by the API
if [ "${1:-}" = --experiments ]; then
  mkdir -p "$dst/typescript/lib"
  cp node_modules/typescript/package.json "$dst/typescript/"
  cp node_modules/typescript/lib/typescript.js "$dst/typescript/lib/"
fi
rm -rf .device/node_modules .device/typescript.tar.xz
tar -C "$stage" -cf - node_modules | xz -6 -T0 > .device/node_modules.tar.xz
du -sh .device native/build/longnet_cuda.node
