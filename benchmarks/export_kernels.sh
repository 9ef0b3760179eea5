#!/usr/bin/env bash
# Write commit COMMIT's `kernels` package into DIR as the package `kernels_before` (its imports
# renamed), for benchmarks/gdn_kernel_compare.py to import beside this tree's `kernels`.
#
#   bash benchmarks/export_kernels.sh 5a705db build/gdr_before
#
# DIR is replaced. build/ is git-ignored; carry it to a machine without git.
set -euo pipefail
commit=${1:?usage: export_kernels.sh COMMIT DIR}
dir=${2:?usage: export_kernels.sh COMMIT DIR}
cd "$(dirname "$0")/.."
rm -rf "$dir"
mkdir -p "$dir"
git archive "$commit" kernels | tar -x -C "$dir"
mv "$dir/kernels" "$dir/kernels_before"
grep -rl --include='*.py' 'kernels' "$dir/kernels_before" | xargs sed -i -E \
  's/\bfrom kernels([. ])/from kernels_before\1/g; s/\bimport kernels\b/import kernels_before/g'
git rev-parse --short "$commit^{commit}" > "$dir/COMMIT"
