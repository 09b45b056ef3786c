"""The cluster kit (experiments/slurm/), run_all.sh's paper guard, the archival files and the
``python -m`` usage lines: shell scripts run against fake ``sbatch``/``scontrol``/``srun``/
``make`` on PATH, so nothing is ever submitted or built; seconds in all."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mlpf.data import prepare as prep
from mlpf.data.generate import file_name
from mlpf.paths import ROOT
from mlpf.scales import Scale

KIT = ROOT / "experiments" / "slurm"
SCRIPTS = sorted([*KIT.glob("*.sh"), *KIT.glob("*.sbatch"), ROOT / "run_all.sh"])


def fake(bin_dir: Path, name: str, body: str) -> Path:
    """An executable ``bin_dir/name`` running the bash ``body``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    p = bin_dir / name
    p.write_text(f"#!/usr/bin/env bash\n{body}\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return p


def run(cmd, bin_dir: Path, env: dict | None = None, cwd=ROOT):
    """``cmd`` with ``bin_dir`` first on PATH; DRY_RUN and the kit's variables cleared."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "DRY_RUN", "ALLOW_PAPER", "MAX_REQUEUE", "WALLTIME",
                                 "MLPF_", "REQUEUE_COUNT", "NO_REQUEUE", "REPO"))}
    base["PATH"] = f"{bin_dir}:{base['PATH']}"
    return subprocess.run(cmd, cwd=cwd, env={**base, **(env or {})}, capture_output=True,
                          text=True, timeout=60)


# ----------------------------------------------------------------------------- every script
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_kit_is_complete():
    names = {p.name for p in KIT.iterdir()}
    assert {"env_setup.sh", "datagen.sbatch", "gpu_validate.sbatch", "search.sbatch",
            "figures.sbatch", "campaign.sh", "README.md"} <= names


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.suffix == ".sbatch"],
                         ids=lambda p: p.name)
def test_no_job_resubmits_its_spooled_copy(script):
    # Slurm runs a spooled copy of the batch script: "$0" is not the repository's file
    for line in script.read_text().splitlines():
        if "sbatch" in line and not line.lstrip().startswith("#"):
            assert "$0" not in line and "${0}" not in line, line


# ----------------------------------------------------------------------------- campaign.sh
METHODS, SEEDS = ["random", "asha"], [0, 1]


def _sbatch_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("sbatch ")]


def _dependency(line: str) -> list[str]:
    """The job ids (or <job:KEY> placeholders) of a line's --dependency=afterok:..."""
    m = re.search(r"--dependency=afterok:(\S+)", line)
    return re.findall(r"<job:[^>]+>|\d+", m.group(1)) if m else []


@pytest.mark.parametrize("how", ["flag", "env"])
def test_campaign_dry_run_prints_the_campaign_and_submits_nothing(tmp_path, how):
    called = tmp_path / "sbatch-called"
    fake(tmp_path / "bin", "sbatch", f'touch "{called}"; echo "sbatch must not run" >&2; exit 1')
    args = [str(KIT / "campaign.sh"), "paper", " ".join(METHODS),
            " ".join(map(str, SEEDS)), "12", "--validate"]
    r = run([*args, "--dry-run"] if how == "flag" else args, tmp_path / "bin",
            env={"DRY_RUN": "1"} if how == "env" else None)
    assert r.returncode == 0, r.stderr
    assert not called.exists(), "the dry run called sbatch"
    lines = _sbatch_lines(r.stdout)
    validate = [ln for ln in lines if "gpu_validate.sbatch" in ln]
    searches = [ln for ln in lines if "search.sbatch" in ln]
    figures = [ln for ln in lines if "figures.sbatch" in ln]
    assert len(validate) == 1 and len(figures) == 1
    assert len(lines) == 1 + len(SEEDS) * (len(METHODS) + 1) + 1
    keys = []
    for seed in SEEDS:
        for m in ["default", *METHODS]:
            (line,) = [ln for ln in searches if ln.endswith(f"search.sbatch {m} paper {seed}")]
            assert f"--nodes={1 if m == 'default' else 12}" in line
            assert _dependency(line) == ["<job:gpu-validate>"]
            keys.append(f"<job:search-{m}-{seed}>")
    # the figures job waits for every search, and only for them
    assert sorted(_dependency(figures[0])) == sorted(keys)
    assert figures[0].endswith("figures.sbatch paper")
    # the estimate: 6 h x 2 seeds x (2 methods x 12 nodes + 1) = 300 node-h, x 21 with
    # requeues; + 0.5 h validation + 1 h figures
    (est,) = [ln for ln in r.stdout.splitlines() if ln.startswith("# node-hours estimate")]
    assert "at most 301.5 " in est and "at most 6301.5 " in est, est
    assert "= 300 node-h" in r.stdout and "= 6300 node-h" in r.stdout


def test_campaign_submits_with_the_ids_sbatch_returns(tmp_path):
    log = tmp_path / "sbatch.log"
    fake(tmp_path / "bin", "sbatch", f"""
n=$(( $(wc -l < "{log}" 2>/dev/null || echo 0) + 1000 ))
echo "$*" >> "{log}"
echo "$n;cluster"   # --parsable prints id;cluster on multi-cluster sites""")
    r = run([str(KIT / "campaign.sh"), "small", "asha", "0 1", "2", "--validate"],
            tmp_path / "bin")
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert all(c.startswith("--parsable ") for c in calls)
    ids = {c.split()[-3] + c.split()[-1]: str(1000 + i) for i, c in enumerate(calls)
           if "search.sbatch" in c}  # "asha0" -> id
    assert sorted(ids) == ["asha0", "asha1", "default0", "default1"]
    assert all("--dependency=afterok:1000 " in c for c in calls if "search.sbatch" in c)
    assert sorted(_dependency(calls[-1])) == sorted(ids.values())
    assert "submitted figures: 1005" in r.stdout


@pytest.mark.parametrize("args", [["paper", "asha", "0", "0"], ["paper", "asha", "x"],
                                  ["huge", "asha", "0"], ["paper", "asha", "0", "1", "--nope"]])
def test_campaign_bad_arguments_submit_nothing(tmp_path, args):
    called = tmp_path / "sbatch-called"
    fake(tmp_path / "bin", "sbatch", f'touch "{called}"; exit 1')
    r = run([str(KIT / "campaign.sh"), *args], tmp_path / "bin")
    assert r.returncode == 2 and "campaign.sh:" in r.stderr
    assert not called.exists()


# ----------------------------------------------------------------------------- search.sbatch
@pytest.fixture
def search_job(tmp_path):
    """search.sbatch run from a spooled copy, as Slurm does, with srun stopped by the walltime
    (exit 143) and fake scontrol/sbatch recording what they are asked."""
    spool = tmp_path / "spool" / "slurm_script"
    spool.parent.mkdir()
    spool.write_text((KIT / "search.sbatch").read_text())
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    fake(bin_dir, "srun", "exit 143")
    fake(bin_dir, "sbatch", f'echo "sbatch $*" >> "{log}"')
    fake(bin_dir, "scontrol", f"""
case "$1" in
    show) echo node1 ;;
    requeue) echo "scontrol $*" >> "{log}"; exit "${{FAKE_REQUEUE_RC:-0}}" ;;
esac""")
    status = tmp_path / "status"
    py = fake(bin_dir, "fakepython", f'cat > /dev/null; cat "{status}"')

    def go(log_status="interrupted", **env):
        status.write_text(log_status + "\n")
        log.unlink(missing_ok=True)
        r = run(["bash", str(spool), "asha", "paper", "0"], bin_dir, env={
            "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_JOB_ID": "42", "SLURM_JOB_NAME": "mlpf-asha",
            "SLURM_JOB_NODELIST": "node1", "SLURM_JOB_NUM_NODES": "1", "TMPDIR": str(tmp_path),
            "PY": str(py), **env})
        return r, (log.read_text().splitlines() if log.exists() else [])
    return go


def test_search_requeues_itself_under_the_same_job_id(search_job):
    r, calls = search_job()
    assert r.returncode == 0, r.stderr
    assert calls == ["scontrol requeue 42"]


def test_search_resubmits_the_repository_script_when_requeue_is_refused(search_job):
    r, calls = search_job(FAKE_REQUEUE_RC="1")
    assert r.returncode == 143, r.stderr
    (sub,) = [c for c in calls if c.startswith("sbatch")]
    assert sub.endswith(f"{ROOT}/experiments/slurm/search.sbatch asha paper 0")
    assert "--dependency=afterany:42" in sub and "REQUEUE_COUNT=1" in sub


@pytest.mark.parametrize("log_status, env", [("complete", {}), ("interrupted",
                                             {"SLURM_RESTART_COUNT": "20"}),
                                             ("interrupted", {"NO_REQUEUE": "1"})])
def test_search_stops_requeueing(search_job, log_status, env):
    r, calls = search_job(log_status, **env)
    assert calls == [] and r.returncode == 143


# ----------------------------------------------------------------------------- other jobs
@pytest.mark.parametrize("no_gpu", ["nvidia-smi", "torch"])
def test_gpu_validate_fails_loudly_without_a_gpu(tmp_path, no_gpu):
    log = tmp_path / "calls.log"
    fake(tmp_path / "bin", "nvidia-smi", "exit 9" if no_gpu == "nvidia-smi" else "echo GPU 0")
    py = fake(tmp_path / "bin", "fakepython", f'echo "python $*" >> "{log}"; exit 1')
    fake(tmp_path / "bin", "srun", f'echo "srun $*" >> "{log}"')
    r = run(["bash", str(KIT / "gpu_validate.sbatch")], tmp_path / "bin",
            env={"REPO": str(tmp_path), "PY": str(py), "SLURM_JOB_ID": "7"})
    assert r.returncode == 1
    (line,) = [ln for ln in r.stderr.splitlines() if "gpu_validate: FAILED" in ln]
    assert ("nvidia-smi" if no_gpu == "nvidia-smi" else "torch sees no CUDA GPU") in line
    calls = log.read_text().splitlines() if log.exists() else []
    assert not any(c.startswith("srun") for c in calls)  # stopped before anything else
    assert sum(c.startswith("python ") for c in calls) == (0 if no_gpu == "nvidia-smi" else 1)


@pytest.mark.parametrize("array", [True, False])
def test_datagen_task_makes_its_shard(tmp_path, array):
    log = tmp_path / "calls.log"
    py = fake(tmp_path / "bin", "fakepython", f'echo "$*" >> "{log}"')
    env = {"REPO": str(tmp_path), "PY": str(py), "SLURM_CPUS_PER_TASK": "48"}
    if array:  # task 3 of --array=2-5: shard 1 of 4
        env.update(SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_MIN="2", SLURM_ARRAY_TASK_COUNT="4")
    r = run(["bash", str(KIT / "datagen.sbatch"), "paper"], tmp_path / "bin", env=env)
    assert r.returncode == 0, r.stderr
    shard = " --shard 1/4" if array else ""
    assert log.read_text().splitlines() == [
        f"-m mlpf.data.prepare --scale paper --workers 48{shard}"]
    # only the whole-set job marks the set complete for `make data`
    assert (tmp_path / "data" / "paper" / ".complete").exists() is not array


# ----------------------------------------------------------------------------- env_setup.sh
def test_env_setup_dry_run_sourced_runs_nothing(tmp_path):
    called = tmp_path / "called"
    for name in ("python3.11", "mpicc", "pip"):
        fake(tmp_path / "bin", name, f'echo {name} >> "{called}"; exit 1')
    r = run(["bash", "-c", f"""set -u
module() {{ echo module >> "{called}"; }}
before=$(set +o; declare -F)
DRY_RUN=1 source "{KIT}/env_setup.sh"; rc=$?
[[ "$before" == "$(set +o; declare -F)" ]] || echo "SHELL CHANGED"
echo "rc=$rc venv=${{VIRTUAL_ENV:-none}}" """], tmp_path / "bin",
            env={"MLPF_VENV": str(tmp_path / "venv")})
    assert r.returncode == 0, r.stderr
    assert not called.exists(), called.read_text()
    assert "SHELL CHANGED" not in r.stdout and "rc=0 venv=none" in r.stdout
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" in r.stdout
    assert "MPICC=mpicc" in r.stdout and "--no-binary mpi4py mpi4py==" in r.stdout


def test_env_setup_installs_the_pins_without_torch_and_mpich(tmp_path):
    venv, log = tmp_path / "venv", tmp_path / "python.log"
    fake(venv / "bin", "python", f'echo "MPICC=${{MPICC:-}} $*" >> "{log}"')
    r = run(["bash", str(KIT / "env_setup.sh")], tmp_path / "bin",
            env={"MLPF_VENV": str(venv), "MLPF_MODULES": "", "TORCH_INDEX_URL": "https://x/cu1"})
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    pins = dict(ln.split("==") for ln in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in ln and not ln.startswith("#"))
    assert any(f"install torch=={pins['torch']} --index-url https://x/cu1" in c for c in calls)
    assert any(c.startswith("MPICC=mpicc ") and f"--no-binary mpi4py mpi4py=={pins['mpi4py']}"
               in c for c in calls)
    rest = (venv / "requirements.cluster.txt").read_text().splitlines()
    names = {ln.split("==")[0] for ln in rest if "==" in ln}
    assert names == set(pins) - {"torch", "mpi4py", "mpich"}
    assert "torch-geometric" in names
    assert any("torch.cuda.is_available()" in c for c in calls)
    assert any("Get_library_version" in c for c in calls)


# ----------------------------------------------------------------------------- run_all.sh
@pytest.fixture
def fake_make(tmp_path):
    log = tmp_path / "make.log"
    fake(tmp_path / "bin", "make", f'echo "make $*" >> "{log}"')
    return lambda: log.read_text().splitlines() if log.exists() else []


def test_run_all_paper_refuses_before_any_make(tmp_path, fake_make):
    r = run([str(ROOT / "run_all.sh"), "paper"], tmp_path / "bin")
    assert r.returncode == 2
    assert fake_make() == []
    (line,) = r.stderr.strip().splitlines()
    assert "experiments/slurm/campaign.sh" in line and "--local" in line
    assert "ALLOW_PAPER_LOCAL=1" in line


@pytest.mark.parametrize("args, env", [(["paper", "--local"], {}),
                                       (["paper"], {"ALLOW_PAPER_LOCAL": "1"})])
def test_run_all_paper_runs_when_asked(tmp_path, fake_make, args, env):
    r = run([str(ROOT / "run_all.sh"), *args, "SEEDS=0 1"], tmp_path / "bin", env=env)
    assert r.returncode == 0, r.stderr
    assert fake_make() == [f"make {t} SCALE=paper SEEDS=0 1" for t in
                           ("data", "benchmark", "figures")]


def test_run_all_smoke_as_before(tmp_path, fake_make):
    r = run([str(ROOT / "run_all.sh"), "smoke"], tmp_path / "bin")
    assert r.returncode == 0, r.stderr
    assert fake_make() == [f"make {t} SCALE=smoke" for t in ("data", "benchmark", "figures")]


# ----------------------------------------------------------------------------- archival files
def test_citation_cff_parses_and_matches_the_package():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["title"] == "MLPF hyperparameter-optimisation artifact"
    assert cff["license"] == "MIT" and cff["message"] and cff["authors"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert str(cff["version"]) == version
    paper = cff["preferred-citation"]
    assert paper["doi"] == "10.48550/arXiv.2203.01112" and paper["year"] == 2022
    assert [a["family-names"] for a in paper["authors"]] == ["Wulff", "Girone", "Pata"]
    assert "MIT License" in (ROOT / "LICENSE").read_text()


# ----------------------------------------------------------------------------- usage lines
@pytest.mark.parametrize("module", ["mlpf.train", "mlpf.data.prepare", "mlpf.data.generate",
                                    "mlpf.data.inspect"])
def test_python_m_usage_line(module):
    r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: python -m {module} "), r.stdout[:80]


# ----------------------------------------------------------------------------- prepare --shard
TINY = Scale("tiny", n_train=2, n_val=1, n_test=1, pileup=0.0, events_per_file=1,
             max_epochs=1, width_factor=1 / 16, event_elements=320)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """prepare() on a 4-file scale (train 2, val 1, test 1; one event each) under tmp_path."""
    root = {"dir": tmp_path / "a"}
    monkeypatch.setattr(prep, "get_scale", lambda name: TINY)
    monkeypatch.setattr(prep, "data_dir", lambda scale, split: root["dir"] / scale / split)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.pkl.bz2"))}


def test_shards_split_the_files_and_match_an_unsharded_run(tiny, tmp_path):
    # a file of an earlier request at the same index: the shard that remakes it drops it
    stale = tmp_path / "a" / "tiny" / "train" / file_name("ttbar", 0.0, 1, 0, 7)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    # files k = train0, train1, val0, test0; shard i of 3 makes k % 3 == i
    assert prep.prepare("tiny", progress=False, shard=(0, 3)) == {"train": 1, "val": 0,
                                                                   "test": 1}
    assert sorted(_files(tmp_path / "a")) == [
        f"tiny/test/{file_name('ttbar', 0.0, 3, 0, 1)}",
        f"tiny/train/{file_name('ttbar', 0.0, 1, 0, 1)}"]
    assert not stale.exists()
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.pkl.bz2")}
    prep.prepare("tiny", progress=False, shard=(0, 3))  # a rerun skips complete files
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    for i in (1, 2):
        prep.prepare("tiny", progress=False, shard=(i, 3))
    tiny["dir"] = tmp_path / "b"
    assert prep.prepare("tiny", progress=False) == {"train": 2, "val": 1, "test": 1}
    assert _files(tmp_path / "a") == _files(tmp_path / "b")  # same names, same bytes


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2"])
def test_shard_flag_rejects_bad_values(text, capsys):
    with pytest.raises(SystemExit) as e:
        prep.main(["--scale", "smoke", "--shard", text])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--shard" in err[0]
