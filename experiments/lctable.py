"""Learning-curve table: sampled configurations trained to max_t, one CSV row per epoch.

    python -m experiments.lctable --scale small                       # 24 configs + the default
    python -m experiments.lctable --scale smoke --configs 4 --workers 2 --out /tmp/lc.csv
    make lctable SCALE=small

The table is what ``python -m experiments.search --backend replay`` reads instead of training
(:mod:`experiments.backends.replay`; its schema, reader and lookup are :mod:`experiments.table`).
Configuration 0 is the untuned default (empty override dict; its ``p:`` cells hold the
resolved default values); configurations 1..N are points of a scrambled Sobol sequence over
the scale's search space (:func:`experiments.space.sobol_configs`; ``--sampler random``:
independent draws) with seed ``--seed``, so the first N of a larger table are the same
configurations. Every configuration is trained to the scale's ``max_t`` with training seed
``--seed`` by the same trainable the live searches use (``mlpf``; ``synthetic`` for tests).

Output: ``results/<scale>/lctable.csv`` and ``results/<scale>/lctable.json`` (scale, seed,
max_t, trainable, workers, threads and devices per training, git commit, host, machine,
package versions, start/end).

Rows are appended as epochs finish (one ``write`` per line, as in :mod:`experiments.logs`), by
``--workers`` processes with one torch thread each (``EXP_THREADS=n`` overrides it). Rerunning
resumes: complete configurations are skipped; a partly recorded one continues from its
per-epoch checkpoint (``--checkpoints``, default ``runs/lctable-<scale>-seed<k>/``) or is trained
again, and only epochs not yet in the table are written.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from experiments import logs
from experiments.cli import CliError, Parser, add_scale, positive_int, run_main
from experiments.provenance import git_commit, iso, machine_info, versions
from experiments.table import (
    CONFIG_ID,
    EPOCH,
    EPOCH_SECONDS,
    PARAM_PREFIX,
    REASON,
    STATUS,
    STATUS_FAILED,
    STATUS_OK,
    TRAIN_LOSS,
    VAL_LOSS,
    columns_for,
    default_values,
    meta_path,
    table_path,
)

DEFAULT_CONFIGS = {"smoke": 8, "small": 24, "paper": 24}
THREADS_ENV = "EXP_THREADS"


# ----------------------------------------------------------------------------- configurations
SAMPLERS = ("sobol", "random")


def sample_configs(scale: str, n: int, seed: int, sampler: str = "random") -> list[dict]:
    """``[{}] + n`` configurations: the default, then ``n`` points of a scrambled Sobol
    sequence (``sobol``) or drawn one at a time (``random``); either way the first ``n`` of a
    larger draw with the same seed are the same."""
    from experiments.space import problem_for, sobol_configs

    if sampler == "sobol":
        return [{}, *sobol_configs(scale, n, seed)]
    if sampler != "random":
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    problem = problem_for(scale)
    space = problem.space
    space.seed(int(seed))
    out: list[dict] = [{}]
    for _ in range(n):
        c = dict(space.sample_configuration())
        out.append({k: logs.native(c[k]) for k in problem.hyperparameter_names})
    return out


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return str(a) == str(b)


# ----------------------------------------------------------------------------- progress
def read_progress(path: Path, max_t: int) -> dict[int, dict]:
    """config_id -> {"epochs": set of ok epochs, "failed": bool, "params": {...},
    "complete": bool} from an existing table (empty when there is none)."""
    import pandas as pd

    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return {}
    df = pd.read_csv(path, on_bad_lines="skip", keep_default_na=False,
                     na_values={VAL_LOSS: [""], TRAIN_LOSS: [""], EPOCH_SECONDS: [""]})
    df = df[df[CONFIG_ID].astype(str).str.isdigit() & df[EPOCH].astype(str).str.isdigit()]
    out: dict[int, dict] = {}
    p_cols = [c for c in df.columns if c.startswith(PARAM_PREFIX)]
    for cid, g in df.groupby(df[CONFIG_ID].astype(int)):
        ok = set(g.loc[g[STATUS] == STATUS_OK, EPOCH].astype(int))
        fail = g.loc[g[STATUS] == STATUS_FAILED, EPOCH].astype(int)
        failed = len(fail) > 0
        complete = ok >= set(range(1, max_t + 1)) or (
            failed and ok >= set(range(1, int(fail.min()))))
        out[int(cid)] = {"epochs": ok, "failed": failed, "complete": bool(complete),
                         "params": {c[len(PARAM_PREFIX):]: g[c].iloc[0] for c in p_cols}}
    return out


# ----------------------------------------------------------------------------- workers
_W: dict = {}  # per worker process: progress queue, threads


def _init_worker(queue, threads: int) -> None:
    _W.update(queue=queue, threads=threads)
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool


class _Diverged(Exception):
    pass


def train_config(task: dict) -> tuple[int, str]:
    """Train one configuration and append its rows; returns ``(config_id, status)``.

    ``task``: config_id, config (overrides), params (p: values), scale, max_t, seed,
    trainable, path, columns, recorded (epochs already in the table), checkpoint_dir.
    """
    from experiments.trainables import get_trainable

    cid, path, columns = task["config_id"], Path(task["path"]), task["columns"]
    recorded = set(task["recorded"])
    queue = _W.get("queue")
    base = {CONFIG_ID: cid, **{PARAM_PREFIX + k: v for k, v in task["params"].items()}}
    trainable = get_trainable(task["trainable"])
    st = {"t": time.perf_counter(), "last": 0}

    def write(epoch: int, values: dict) -> None:
        logs.append_row(path, {**base, EPOCH: epoch, **values}, columns)
        recorded.add(epoch)
        if queue is not None:
            queue.put(1)

    def on_epoch(m: dict) -> bool:
        epoch, val = int(m["epoch"]), float(m["val_loss"])
        if not math.isfinite(val):
            raise _Diverged(f"val_loss={val} at epoch {epoch}")
        if epoch not in recorded:
            write(epoch, {VAL_LOSS: val, TRAIN_LOSS: float(m.get("train_loss", math.nan)),
                          EPOCH_SECONDS: float(m["epoch_seconds"]), STATUS: STATUS_OK,
                          REASON: ""})
        st["t"], st["last"] = time.perf_counter(), epoch
        return False

    ckpt = task.get("checkpoint_dir")
    status = STATUS_OK
    try:
        history = trainable.train(task["scale"], task["config"], task["max_t"], on_epoch,
                                  seed=task["seed"], threads=_W.get("threads", 1),
                                  checkpoint_dir=ckpt)
        for m in history:  # epochs restored from a checkpoint that the table lacks
            if int(m["epoch"]) not in recorded:
                on_epoch(m)
    except Exception as e:  # noqa: BLE001 - a failed configuration is a result, not a crash
        reason = "diverged" if isinstance(e, _Diverged) else trainable.failure_reason(e)
        write(st["last"] + 1, {EPOCH_SECONDS: time.perf_counter() - st["t"],
                               STATUS: STATUS_FAILED, REASON: reason})
        status = f"{STATUS_FAILED} ({reason})"
        if queue is not None:  # the epochs it will not train
            queue.put(task["max_t"] - len(recorded))
    if ckpt:
        shutil.rmtree(ckpt, ignore_errors=True)
    return cid, status


# ----------------------------------------------------------------------------- main
def _lock(path: Path) -> int:
    """An exclusive lock on the table for this run (a second run on it is refused)."""
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"{path}: another lctable run is writing this table") from None
    return fd


def _threads() -> int:
    return int(os.environ.get(THREADS_ENV) or 1)


def run(scale: str, n_configs: int | None = None, workers: int = 2, seed: int = 0,
        out: str | Path | None = None, trainable: str = "mlpf",
        checkpoints: str | Path | None = None, progress: bool = True,
        sampler: str | None = None) -> int:
    """Fill the table (resuming); returns an exit code (0: every configuration complete).

    ``sampler``: ``sobol`` for a new table; an existing table keeps the one it was made with
    (``random`` for tables from before the choice existed)."""
    from experiments.trainables import get_trainable
    from mlpf.paths import ROOT
    from mlpf.scales import get_scale

    max_t = get_scale(scale).max_epochs
    tr = get_trainable(trainable)
    tr.check_ready(scale)
    n_configs = DEFAULT_CONFIGS[scale] if n_configs is None else int(n_configs)
    path = Path(out) if out else table_path(scale)
    ckpt_root = Path(checkpoints) if checkpoints else ROOT / "runs" / f"lctable-{scale}-seed{seed}"
    old_meta = logs.read_json(meta_path(path))
    made_with = (old_meta.get("sampler") or "random") if old_meta is not None else "sobol"
    if sampler is not None and sampler != made_with and old_meta is not None:
        raise ValueError(f"{path} was made with sampler {made_with!r}, not {sampler!r}; "
                         "pass another --out")
    sampler = sampler or made_with
    configs = sample_configs(scale, n_configs, seed, sampler)
    defaults = default_values(scale)
    params = [{**defaults, **c} for c in configs]
    columns = columns_for(defaults)

    if old_meta is not None:
        for key, want in (("scale", scale), ("seed", seed), ("trainable", trainable)):
            if old_meta.get(key) != want:
                raise ValueError(f"{path} was made with {key}={old_meta.get(key)!r}, not "
                                 f"{want!r}; pass another --out")
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a regular file; pass --out a CSV file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        logs.ensure_header(path, columns)
    except OSError as e:
        raise ValueError(f"cannot write the table {path}: {e.strerror}") from None
    header = path.read_text().split("\n", 1)[0].split(",")
    if tuple(header) != columns:
        raise ValueError(f"{path} has other columns than this scale's table; "
                         "pass another --out")
    lock = _lock(path)
    try:
        return _fill(scale, path, configs, params, columns, max_t, seed, workers, trainable, tr,
                     old_meta, ckpt_root, progress, sampler)
    finally:
        os.close(lock)


def _fill(scale, path, configs, params, columns, max_t, seed, workers, trainable, tr, old_meta,
          ckpt_root, progress, sampler) -> int:
    """The part of :func:`run` that holds the table's lock."""
    n_configs = len(configs) - 1
    done = read_progress(path, max_t)
    for cid, d in done.items():
        if cid < len(params) and not all(_same(d["params"].get(k), v)
                                         for k, v in params[cid].items()):
            raise ValueError(f"{path}: configuration {cid} differs from the one drawn with "
                             f"seed {seed}; pass another --out")
    logs.end_with_newline(path)

    now = time.time()
    segment = {"start_iso": iso(now), "end_iso": None, "workers": workers,
               "threads": _threads(), "host": socket.gethostname()}
    meta = old_meta or {"scale": scale, "seed": seed, "max_t": max_t, "trainable": trainable,
                        "trainable_options": tr.options(), "versions": versions(),
                        "git_commit": git_commit(), "host": socket.gethostname(),
                        "start_iso": iso(now), "segments": []}
    meta.update(n_configs=n_configs, sampler=sampler, workers=workers, threads=_threads(),
                devices=1, machine=machine_info(), status="running", end_iso=None,
                columns=list(columns))
    meta["segments"] = [*meta.get("segments", []), segment]
    logs.write_json(meta_path(path), meta)

    tasks = []
    for cid, (cfg, p) in enumerate(zip(configs, params)):
        d = done.get(cid)
        if d and d["complete"]:
            continue
        tasks.append({"config_id": cid, "config": cfg, "params": p, "scale": scale,
                      "max_t": max_t, "seed": seed, "trainable": trainable, "path": str(path),
                      "columns": columns, "recorded": sorted(d["epochs"]) if d else [],
                      "checkpoint_dir": str(ckpt_root / f"config{cid}")})
    remaining = sum(max_t - len(t["recorded"]) for t in tasks)
    print(f"lctable {scale}: {len(configs)} configurations ({len(configs) - len(tasks)} "
          f"complete), {remaining} epochs to train on {workers} workers -> {path}",
          file=sys.stderr, flush=True)
    results: list[tuple[int, str]] = []
    status = "complete"
    if tasks:
        ctx = mp.get_context("spawn")  # torch in the workers only, no fork after its init
        queue = ctx.Queue()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=remaining, unit="epoch", desc=f"lctable {scale}", file=sys.stderr,
                       mininterval=0.5 if sys.stderr.isatty() else 60.0)
        pool = ctx.Pool(min(workers, len(tasks)), _init_worker, (queue, _threads()))
        try:
            pending = pool.imap_unordered(train_config, tasks)
            while len(results) < len(tasks):
                try:
                    results.append(pending.next(timeout=0.2))
                    tqdm_write = f"config {results[-1][0]}: {results[-1][1]}"
                    if bar is not None:
                        bar.write(tqdm_write)
                except mp.TimeoutError:
                    pass
                while not queue.empty():
                    n = queue.get()
                    if bar is not None:
                        bar.update(n)
            pool.close()
        except KeyboardInterrupt:
            pool.terminate()
            status = "interrupted"
        finally:
            pool.join()
            if bar is not None:
                bar.close()
    final = read_progress(path, max_t)
    incomplete = [c for c in range(len(configs)) if not final.get(c, {}).get("complete")]
    if status == "complete" and incomplete:
        status = "incomplete"
    meta["status"] = status
    meta["end_iso"] = segment["end_iso"] = iso(time.time())
    meta["n_failed"] = sum(1 for d in final.values() if d["failed"])
    logs.write_json(meta_path(path), meta)
    if status == "complete" and ckpt_root.exists() and not any(ckpt_root.iterdir()):
        ckpt_root.rmdir()
    print(f"lctable {scale}: {status}; {len(configs) - len(incomplete)}/{len(configs)} "
          f"configurations, {meta['n_failed']} failed -> {path}", file=sys.stderr)
    return {"complete": 0, "interrupted": 130}.get(status, 1)


def main(argv=None) -> int:
    p = Parser("python -m experiments.lctable", __doc__)
    add_scale(p)
    p.add_argument("--configs", type=int, default=None,
                   help=f"sampled configurations besides the default ({DEFAULT_CONFIGS})")
    p.add_argument("--workers", type=positive_int, default=2, help="parallel trainings")
    p.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    p.add_argument("--out", default=None, help="table CSV (default results/<scale>/lctable.csv)")
    p.add_argument("--trainable", default="mlpf", help="mlpf | synthetic")
    p.add_argument("--checkpoints", default=None,
                   help="training states (default runs/lctable-<scale>-seed<k>/)")
    p.add_argument("--sampler", default=None, choices=SAMPLERS,
                   help="configurations: a scrambled Sobol sequence (default for a new table) "
                   "or independent random draws")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    def body() -> int:
        a = p.parse_args(argv)
        try:
            if a.configs is not None and a.configs < 0:
                raise ValueError("--configs must be >= 0")
            return run(a.scale, a.configs, a.workers, a.seed, a.out, a.trainable,
                       a.checkpoints, progress=not a.quiet, sampler=a.sampler)
        except (ValueError, FileNotFoundError) as e:
            raise CliError(str(e)) from None

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
