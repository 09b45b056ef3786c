#!/usr/bin/env bash
# The whole pipeline for one scale: data -> searches -> figures.
#   ./run_all.sh [smoke|small|paper]     (default: small; extra VAR=value go to make)
#   ./run_all.sh paper --local           (or ALLOW_PAPER_LOCAL=1: paper scale on this machine)
# Safe to rerun after an interruption: complete data files and complete searches are
# skipped, interrupted searches resume from their logs.
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-}" in
    -h|--help)
        sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
        exit 0 ;;
esac
scale=${1:-small}
shift || true
case "$scale" in
    smoke|small|paper) ;;
    *) echo "run_all.sh: unknown scale '${scale//[^a-zA-Z0-9_.-]/?}'; choose smoke, small or paper" \
           "(./run_all.sh --help)" >&2
       exit 2 ;;
esac
local_ok=${ALLOW_PAPER_LOCAL:-0}
args=()
for a in "$@"; do
    if [[ "$a" == --local ]]; then local_ok=1; else args+=("$a"); fi
done
# The paper scale is a GPU-cluster campaign (thousands of GPU-hours): refuse it here unless
# asked for explicitly, before anything runs.
if [[ "$scale" == paper && "$local_ok" != 1 ]]; then
    echo "run_all.sh: paper scale is thousands of GPU-hours; submit it with" \
        "experiments/slurm/campaign.sh (experiments/slurm/README.md), or pass --local /" \
        "set ALLOW_PAPER_LOCAL=1 to run it on this machine anyway" >&2
    exit 2
fi
make data SCALE="$scale" ${args[@]+"${args[@]}"}
make benchmark SCALE="$scale" ${args[@]+"${args[@]}"}
make figures SCALE="$scale" ${args[@]+"${args[@]}"}
echo "done: results/$scale/ and paper_figures/$scale/"
