#!/usr/bin/env bash
# Run HERE (not on the GPU machine), before a device run that trains or benchmarks: copies into
# .device/node_modules the run-time dependencies the GPU machine lacks, trimmed to fit the transfer
# limit (js-tiktoken with only the cl100k_base ranks; lodash whole, as the default and benchmark corpus;
# hyparquet and its codecs; tsx and esbuild to run TypeScript). scripts/device-setup.sh puts them in
# node_modules there. Carry `.device` and `native/build/longnet_cuda.node`.
set -euo pipefail
cd "$(dirname "$0")/.."
dst=.device/node_modules
rm -rf "$dst"
mkdir -p "$dst/js-tiktoken/dist/ranks"
cp node_modules/js-tiktoken/package.json "$dst/js-tiktoken/"
cp node_modules/js-tiktoken/dist/lite.js node_modules/js-tiktoken/dist/chunk-*.js "$dst/js-tiktoken/dist/"
cp node_modules/js-tiktoken/dist/ranks/cl100k_base.js "$dst/js-tiktoken/dist/ranks/"
for m in base64-js lodash hyparquet hyparquet-compressors hysnappy fzstd tsx esbuild @esbuild; do
  cp -r "node_modules/$m" "$dst/"
done
rm -f "$dst/esbuild/bin/esbuild"  # a copy of the @esbuild binary (a hard link in node_modules), unused by the API
du -sh .device native/build/longnet_cuda.node
