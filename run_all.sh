#!/usr/bin/env bash
# The whole pipeline for one scale: data -> searches -> figures.
#   ./run_all.sh [smoke|small|paper]     (default: small; extra VAR=value go to make)
# Safe to rerun after an interruption: complete data files and complete searches are
# skipped, interrupted searches resume from their logs.
set -euo pipefail
cd "$(dirname "$0")"
scale=${1:-small}
shift || true
make data SCALE="$scale" "$@"
make benchmark SCALE="$scale" "$@"
make figures SCALE="$scale" "$@"
echo "done: results/$scale/ and paper_figures/$scale/"
