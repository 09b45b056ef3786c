#!/bin/bash
# Submit the whole study: the untuned default, then every method x seed, one Slurm job each.
#   experiments/slurm/campaign.sh paper "random hyperband asha asha_bo" "0 1 2" 12
# Arguments: scale, methods, seeds, nodes per search (workers = 4 x nodes).
set -euo pipefail
SCALE=${1:-paper}
METHODS=${2:-"random hyperband asha asha_bo"}
SEEDS=${3:-0}
NODES=${4:-12}
HERE=$(cd "$(dirname "$0")" && pwd)
for seed in ${SEEDS}; do
    # the default is one trial: one node, manager + 1 worker would do, 1 node is the minimum
    sbatch --nodes=1 "${HERE}/search.sbatch" default "${SCALE}" "${seed}"
    for m in ${METHODS}; do
        sbatch --nodes="${NODES}" "${HERE}/search.sbatch" "${m}" "${SCALE}" "${seed}"
    done
done
