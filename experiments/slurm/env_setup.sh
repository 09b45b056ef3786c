#!/usr/bin/env bash
# Build the Python environment of the searches on a cluster (a login node is enough):
# site modules, a venv, the CUDA build of the pinned torch, requirements.txt without torch and
# without the `mpich` wheel, and mpi4py compiled against the system MPI. Then it prints
# whether torch sees CUDA (False on a GPU-less login node is expected: gpu_validate.sbatch
# checks a GPU node) and which MPI library mpi4py uses.
#
#   bash experiments/slurm/env_setup.sh               # build (again: pip skips what is there)
#   source experiments/slurm/env_setup.sh             # the same, and keep the modules and the
#                                                     # venv active in this shell
#   DRY_RUN=1 bash experiments/slurm/env_setup.sh     # print the commands, run none of them
#   DRY_RUN=1 source experiments/slurm/env_setup.sh   # the same: nothing runs, nothing changes
#
# Placeholders, read from the environment (adapt to the site):
#   MLPF_MODULES     modules to load, space-separated; they must provide python3.11, a C
#                    compiler, the MPI and CUDA the jobs use (default: a JUWELS-like stack;
#                    MLPF_MODULES= loads none)
#   MLPF_PYTHON      the interpreter that makes the venv (default python3.11)
#   MLPF_VENV        the venv (default <repo>/.venv, the PY the batch scripts use)
#   TORCH_INDEX_URL  the wheel index of the CUDA build of torch
#                    (default https://download.pytorch.org/whl/cu128)
#   MPICC            the MPI compiler wrapper mpi4py is built with (default mpicc)
#
# Versions come from requirements.txt (torch==..., mpi4py==...), so the cluster runs the same
# pins as a laptop; only the builds differ (CUDA torch, mpi4py against the system MPI).

_mlpf_env_setup() {
    local repo dry reqs torch_pin mpi4py_pin filtered
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd) || return 1
    dry=${DRY_RUN:-0}
    local modules=${MLPF_MODULES-"Stages/2025 GCC OpenMPI CUDA Python"}
    local python=${MLPF_PYTHON:-python3.11}
    local venv=${MLPF_VENV:-${repo}/.venv}
    local index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}
    local mpicc=${MPICC:-mpicc}
    reqs=${repo}/requirements.txt

    # the one place commands run: printed in a dry run, else run with a failure message
    _mlpf_run() {
        local a line="+"
        for a in "$@"; do  # quoted only where the shell needs it
            if [[ "${a}" =~ ^[A-Za-z0-9_./:=+,@%-]+$ ]]; then line+=" ${a}"
            else line+=" ${a@Q}"; fi
        done
        echo "${line}"
        [[ "${dry}" == 1 ]] && return 0
        "$@" || { echo "env_setup: failed: $*" >&2; return 1; }
    }

    torch_pin=$(grep -E '^torch==' "${reqs}") \
        || { echo "env_setup: no torch== in ${reqs}" >&2; return 1; }
    mpi4py_pin=$(grep -E '^mpi4py==' "${reqs}") \
        || { echo "env_setup: no mpi4py== in ${reqs}" >&2; return 1; }
    echo "env_setup: ${torch_pin} from ${index}, ${mpi4py_pin} built with ${mpicc}, venv ${venv}"

    if [[ -n "${modules}" ]]; then
        # shellcheck disable=SC2086  # the module names are meant to split
        _mlpf_run module load ${modules} || return 1
    fi
    if [[ ! -x "${venv}/bin/python" ]]; then
        _mlpf_run "${python}" -m venv "${venv}" || return 1
    fi
    local pip=("${venv}/bin/python" -m pip --disable-pip-version-check)
    _mlpf_run "${pip[@]}" install --upgrade pip || return 1
    _mlpf_run "${pip[@]}" install "${torch_pin}" --index-url "${index}" || return 1
    _mlpf_run env MPICC="${mpicc}" "${pip[@]}" install --no-binary mpi4py "${mpi4py_pin}" \
        || return 1
    # everything else at its pin: not torch (the CUDA build above), not mpi4py (built above),
    # not the mpich wheel (the system MPI replaces it)
    filtered=${venv}/requirements.cluster.txt
    if [[ "${dry}" == 1 ]]; then
        echo "+ grep -vE '^(torch|mpi4py|mpich)==' ${reqs} > ${filtered}"
    else
        grep -vE '^(torch|mpi4py|mpich)==' "${reqs}" > "${filtered}" || return 1
    fi
    _mlpf_run "${pip[@]}" install -r "${filtered}" || return 1
    # what the jobs will see: torch's CUDA (False on a login node without GPUs) and the MPI
    local check
    check='import torch; print("torch", torch.__version__, "CUDA:", torch.cuda.is_available())'
    _mlpf_run "${venv}/bin/python" -c "${check}" || return 1
    check='from mpi4py import MPI; print("MPI:", MPI.Get_library_version().split("\n")[0])'
    _mlpf_run "${venv}/bin/python" -c "${check}" || return 1
    if [[ "${dry}" != 1 && "${1:-}" == sourced ]]; then
        # sourced: keep the venv active in the caller's shell (modules are already loaded)
        # shellcheck disable=SC1091
        source "${venv}/bin/activate"
    fi
    [[ "${dry}" == 1 ]] && echo "env_setup: dry run, nothing was run"
    return 0
}

if [[ "${BASH_SOURCE[0]}" != "${0}" ]]; then  # sourced: leave no functions behind
    _mlpf_env_setup sourced || { unset -f _mlpf_env_setup _mlpf_run; return 1; }
    unset -f _mlpf_env_setup _mlpf_run
    return 0
fi
_mlpf_env_setup
