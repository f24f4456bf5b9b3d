#!/usr/bin/env bash
# Packs what the benchmarks need on a lent GPU machine (bench/device-site.txt, plus the daam package, which
# PyPI has only as a source archive) into .whl/site.tar.xz (~43 MB; .whl/ is git-ignored): that machine
# reaches no package index. Then, with the device tool, carry [".whl/site.tar.xz"] and run e.g.
#   tar -xJf .whl/site.tar.xz -C /tmp && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 &&
#   python3 bench/attention.py --full-size --repeats 3 2>&1 | tee $OUT/attention.log
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
target=(--python-version 3.12 --implementation cp --only-binary=:all: "${platforms[@]}")
"$PY" -m pip download -q --no-deps "${target[@]}" -d "$work/wheels" -r bench/device-site.txt
"$PY" -m pip wheel -q --no-deps -w "$work/wheels" daam==0.2.0
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "${target[@]}" "$work"/wheels/*.whl
mkdir -p .whl
tar -cJf .whl/site.tar.xz -C "$work" site
echo "wrote .whl/site.tar.xz ($(du -h .whl/site.tar.xz | cut -f1))"
