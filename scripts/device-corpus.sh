# Sourced by the device scripts: a real code corpus in /tmp/corpus (lodash's JavaScript and this
# repository's TypeScript, C++ and CUDA; no JSON: the directory reader takes .json files for JSON lines).
corpus=/tmp/corpus
if [ ! -d $corpus ]; then
  mkdir -p $corpus/lodash $corpus/longnet
  (cd node_modules/lodash && find . -name '*.js' -exec cp --parents {} $corpus/lodash/ \;)
  for d in src test bench native/src scripts; do
    (find "$d" -type f \( -name '*.ts' -o -name '*.cc' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' -o -name '*.sh' -o -name '*.mjs' \) \
      -exec cp --parents {} $corpus/longnet/ \;)
  done
  echo "corpus: $(find $corpus -type f | wc -l) files, $(du -sb $corpus | cut -f1) bytes"
fi
