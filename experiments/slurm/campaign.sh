#!/usr/bin/env bash
# Submit the whole study: the untuned default and every method x seed (one Slurm job each),
# optionally a GPU validation job first, and a figures job chained on every search.
#
#   experiments/slurm/campaign.sh paper "random hyperband asha asha_bo" "0 1 2" 12
#   experiments/slurm/campaign.sh paper "random asha" "0 1" 12 --validate --dry-run
#
# Arguments: scale, methods, seeds, nodes per search (workers = 4 x nodes). Flags, anywhere:
#   --dry-run (or DRY_RUN=1)  print every sbatch command line, with placeholder job ids such
#                             as <job:search-asha-0> in dependencies, and submit nothing
#   --validate                submit gpu_validate.sbatch first; the searches start only if it
#                             passes (--dependency=afterok, cancelled if it fails)
#   --no-figures              no figures job
# Environment: WALLTIME (e.g. 12:00:00) replaces the searches' #SBATCH --time; MAX_REQUEUE
# (default 20) bounds each search's requeues (search.sbatch reads it too).
#
# Before submitting it prints the node-hour estimate, from each script's #SBATCH --time (a job
# is charged the time it runs, at most its walltime, so both numbers are upper bounds):
#   searches, one walltime each = walltime x seeds x (methods x nodes + 1)   (+1: the default,
#                                                                              on 1 node)
#   searches, every requeue     = the above x (1 + MAX_REQUEUE)
#   plus 1 node x its walltime for the validation job and for the figures job;
#   GPU-hours of the searches   = 4 x their node-hours.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "${HERE}/../.." && pwd)

DRY=${DRY_RUN:-0}
VALIDATE=0
FIGURES=1
ARGS=()
for a in "$@"; do
    case "$a" in
        --dry-run) DRY=1 ;;
        --validate) VALIDATE=1 ;;
        --no-figures) FIGURES=0 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) echo "campaign.sh: unknown flag $a (see --help)" >&2; exit 2 ;;
        *) ARGS+=("$a") ;;
    esac
done
SCALE=${ARGS[0]:-paper}
METHODS=${ARGS[1]:-"random hyperband asha asha_bo"}
SEEDS=${ARGS[2]:-0}
NODES=${ARGS[3]:-12}
MAX_REQUEUE=${MAX_REQUEUE:-20}
die() { echo "campaign.sh: $*" >&2; exit 2; }
[[ "${NODES}" =~ ^[1-9][0-9]*$ ]] || die "nodes must be an integer >= 1, got '${NODES}'"
[[ "${MAX_REQUEUE}" =~ ^[0-9]+$ ]] || die "MAX_REQUEUE must be an integer >= 0"
METHOD_LIST=()
for m in ${METHODS}; do  # the default is always submitted, once per seed
    [[ "$m" == default ]] || METHOD_LIST+=("$m")
done
read -r -a SEED_LIST <<< "${SEEDS}"
(( ${#SEED_LIST[@]} )) || die "give at least one seed"
for s in "${SEED_LIST[@]}"; do
    [[ "$s" =~ ^[0-9]+$ ]] || die "seeds are integers >= 0, got '$s'"
done
[[ "${SCALE}" =~ ^(smoke|small|paper)$ ]] || die "scale is smoke, small or paper, got '${SCALE}'"

# ---- walltimes: a script's #SBATCH --time, in seconds ---------------------------------------
sbatch_time() { sed -n 's/^#SBATCH --time=\([0-9:-]*\).*/\1/p' "$1" | head -n 1; }
to_seconds() {  # Slurm's [D-]HH:MM:SS, [D-]HH:MM, [D-]HH, MM:SS or MM -> seconds
    local t=$1 d=0 h=0 m=0 s=0 f
    if [[ "$t" == *-* ]]; then
        d=${t%%-*}; t=${t#*-}
        IFS=: read -r h m s <<< "$t"
    else
        IFS=: read -r -a f <<< "$t"
        case ${#f[@]} in
            3) h=${f[0]}; m=${f[1]}; s=${f[2]} ;;
            2) m=${f[0]}; s=${f[1]} ;;
            1) m=${f[0]} ;;
            *) echo "campaign.sh: cannot read the walltime '$1'" >&2; return 1 ;;
        esac
    fi
    echo $(( 10#${d:-0} * 86400 + 10#${h:-0} * 3600 + 10#${m:-0} * 60 + 10#${s:-0} ))
}
hours() { awk -v s="$1" 'BEGIN { printf "%.10g", s / 3600 }'; }
SEARCH_TIME=${WALLTIME:-$(sbatch_time "${HERE}/search.sbatch")}
T_SEARCH=$(to_seconds "${SEARCH_TIME}")
T_VALIDATE=$(to_seconds "$(sbatch_time "${HERE}/gpu_validate.sbatch")")
T_FIGURES=$(to_seconds "$(sbatch_time "${HERE}/figures.sbatch")")

# ---- the node-hour estimate ------------------------------------------------------------------
N_SEEDS=${#SEED_LIST[@]}
N_METHODS=${#METHOD_LIST[@]}
N_SEARCHES=$(( N_SEEDS * (N_METHODS + 1) ))
SEARCH_NODES=$(( N_SEEDS * (N_METHODS * NODES + 1) ))
FIRST_S=$(( SEARCH_NODES * T_SEARCH ))
BOUND_S=$(( FIRST_S * (1 + MAX_REQUEUE) ))
EXTRA_S=$(( VALIDATE * T_VALIDATE + FIGURES * T_FIGURES ))
echo "# campaign: scale ${SCALE}; methods ${METHODS}; seeds ${SEEDS}; ${NODES} nodes per" \
     "search; ${N_SEARCHES} search jobs (with the default); search walltime ${SEARCH_TIME}"
echo "# node-hours, searches within one walltime each: ${N_SEEDS} seeds x (${N_METHODS}" \
     "methods x ${NODES} nodes + 1 default node) x $(hours "${T_SEARCH}") h =" \
     "$(hours "${FIRST_S}") node-h"
echo "# node-hours, searches with every requeue: $(hours "${FIRST_S}") x" \
     "(1 + MAX_REQUEUE=${MAX_REQUEUE}) = $(hours "${BOUND_S}") node-h"
echo "# node-hours, validation + figures: $(hours "${EXTRA_S}") node-h"
echo "# node-hours estimate: at most $(hours $(( FIRST_S + EXTRA_S ))) if every search ends" \
     "within one walltime, at most $(hours $(( BOUND_S + EXTRA_S ))) with every requeue" \
     "(searches: $(( 4 * FIRST_S / 3600 )) to $(( 4 * BOUND_S / 3600 )) GPU-h)"

# ---- submission ------------------------------------------------------------------------------
# The jobs run in the submit directory: submit from the repository root.
cd "${REPO}"
KIT=experiments/slurm  # the scripts, relative to the repository root
[[ "${DRY}" == 1 ]] && echo "# dry run: nothing is submitted; the sbatch lines, from ${REPO}:"
JOB=""
submit() {  # submit KEY sbatch-args...: sets JOB to the job id (<job:KEY> in a dry run)
    local key=$1 out a line="sbatch --parsable"
    shift
    if [[ "${DRY}" == 1 ]]; then
        for a in "$@"; do  # quoted only where the shell needs it
            if [[ "${a}" =~ ^[A-Za-z0-9_./:=+,@%\<\>-]+$ ]]; then line+=" ${a}"
            else line+=" ${a@Q}"; fi
        done
        echo "${line}"
        JOB="<job:${key}>"
        return 0
    fi
    out=$(sbatch --parsable "$@") || { echo "campaign.sh: sbatch failed for ${key}" >&2; exit 1; }
    JOB=${out%%;*}  # --parsable prints "id" or "id;cluster"
    [[ "${JOB}" =~ ^[0-9]+$ ]] || { echo "campaign.sh: no job id from sbatch: ${out}" >&2; exit 1; }
    echo "submitted ${key}: ${JOB}"
}

AFTER_VALIDATE=()
if (( VALIDATE )); then
    submit gpu-validate "${KIT}/gpu_validate.sbatch"
    AFTER_VALIDATE=(--dependency="afterok:${JOB}" --kill-on-invalid-dep=yes)
fi
TIME_ARG=()
[[ -n "${WALLTIME:-}" ]] && TIME_ARG=(--time="${WALLTIME}")
SEARCH_IDS=()
for seed in "${SEED_LIST[@]}"; do
    for m in default "${METHOD_LIST[@]}"; do
        n=${NODES}
        [[ "$m" == default ]] && n=1  # the default is one trial: 1 node is the minimum
        submit "search-${m}-${seed}" ${AFTER_VALIDATE[@]+"${AFTER_VALIDATE[@]}"} \
            --job-name="mlpf-${m}-${SCALE}-s${seed}" --nodes="${n}" \
            ${TIME_ARG[@]+"${TIME_ARG[@]}"} "${KIT}/search.sbatch" "${m}" "${SCALE}" "${seed}"
        SEARCH_IDS+=("${JOB}")
    done
done
if (( FIGURES )); then
    # afterok on every search: search.sbatch requeues under the same job id, so a search
    # interrupted by its walltime does not release (or cancel) this job
    submit figures --dependency="afterok:$(IFS=:; echo "${SEARCH_IDS[*]}")" \
        --kill-on-invalid-dep=yes "${KIT}/figures.sbatch" "${SCALE}"
fi
