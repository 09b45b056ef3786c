"""Learning-curve table: sampled configurations trained to max_t, one CSV row per epoch.

    python -m experiments.lctable --scale small                # 1,024 configs + the default
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

Losses are recorded to 7 significant digits and seconds to 0.1 ms (:func:`rounded`); a table
begun with full-precision cells is rounded on resume (:func:`compact`).

Rows are appended as epochs finish (one ``write`` per line, as in :mod:`experiments.logs`), by
``--workers`` processes with one torch thread each (``EXP_THREADS=n`` overrides it). Rerunning
resumes: complete configurations are skipped; a partly recorded one continues from its
per-epoch checkpoint (``--checkpoints``, default ``runs/lctable-<scale>-seed<k>-<key>/``, the key
a hash of the table's absolute path: tables at other paths never resume each other's
trainings) or is trained again, and only epochs not yet in the table are written.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from experiments import logs
from experiments.cli import (
    CliError,
    Parser,
    add_scale,
    add_workers,
    check_workers,
    duration,
    run_main,
    seed_value,
)
from experiments.provenance import git_commit, iso, machine_info, versions
from experiments.table import (
    CONFIG_ID,
    EPOCH,
    EPOCH_SECONDS,
    PARAM_PREFIX,
    REASON,
    REPLICATE,
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

DEFAULT_CONFIGS = {"smoke": 8, "small": 1024, "paper": 256}
# scale -> (training seeds of the default, of each replicated configuration, how many of the
# first sampled configurations are replicated): the noise of training, measured
DEFAULT_REPLICATES = {"smoke": (1, 1, 0), "small": (5, 3, 64), "paper": (5, 3, 32)}
REPLICATE_SEED_STRIDE = 7919  # training seed of replicate r: seed + r * stride

# Cells are rounded as they are written: losses to LOSS_DIGITS significant digits (at most
# 5e-7 relative, near the float32 training's own resolution, eps 1.2e-7), seconds to
# SECONDS_DECIMALS decimals (0.1 ms), and a positive time that would round to zero (a tiny
# model's epoch) to SECONDS_TINY_DIGITS significant digits, so that no measured time reads
# as 0 (the surrogate and the cost models take its log). Both are far below the seed noise and
# the timing noise; unrounded, the 1,024-configuration table at small (about 17,000 rows of 380
# bytes) would pass 5 MiB, the most a shipped file may hold (rounded: about 270 bytes a row).
LOSS_DIGITS = 7
SECONDS_DECIMALS = 4
SECONDS_TINY_DIGITS = 2
LOSS_COLUMNS = (VAL_LOSS, TRAIN_LOSS, logs.VAL_LOSS_REG, *logs.VAL_COMPONENTS)
SECONDS_COLUMNS = (EPOCH_SECONDS, logs.EPOCH_CPU_SECONDS)


def replicate_seed(seed: int, replicate: int) -> int:
    """Training seed of a replicate (replicate 0 trains with the table's seed)."""
    return int(seed) + REPLICATE_SEED_STRIDE * int(replicate)


def trainings(n_configs: int, replicates: tuple[int, int, int]) -> list[tuple[int, int]]:
    """Every (config id, replicate) of a table, in its canonical order: the default with its
    seeds, then each of the first ``n_replicated`` configurations with its seeds, then the
    rest (a partial table measures the training noise early)."""
    default_seeds, seeds, n_replicated = replicates
    n_rep = min(n_replicated, n_configs)
    out = [(0, r) for r in range(max(1, default_seeds))]
    out += [(c, r) for c in range(1, n_rep + 1) for r in range(max(1, seeds))]
    out += [(c, 0) for c in range(n_rep + 1, n_configs + 1)]
    return out


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


def rounded(column: str, value):
    """``value`` of ``column`` as the table records it (:data:`LOSS_DIGITS`,
    :data:`SECONDS_DECIMALS`); other columns, and values that are not finite numbers, as
    they are."""
    if column not in LOSS_COLUMNS and column not in SECONDS_COLUMNS:
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        return value
    if not math.isfinite(v):
        return value
    if column in SECONDS_COLUMNS:
        r = round(v, SECONDS_DECIMALS)
        return r if r != 0 or v == 0 else float(f"{v:.{SECONDS_TINY_DIGITS}g}")
    return float(f"{v:.{LOSS_DIGITS}g}")


def compact(path: Path) -> int:
    """Round the cells of a table written before :func:`rounded` existed, in place of the
    file (:func:`experiments.logs.write_atomic`); returns the number of lines changed (0: the
    file is left alone). Only whole data lines (as many cells as the header, digits as keys)
    change, and only in :data:`LOSS_COLUMNS` and :data:`SECONDS_COLUMNS`; any other line,
    e.g. one cut by a kill, is kept as it was."""
    lines = Path(path).read_text().split("\n")
    cols = lines[0].split(",")
    at = {i: c for i, c in enumerate(cols) if c in LOSS_COLUMNS or c in SECONDS_COLUMNS}
    keys = [cols.index(c) for c in (CONFIG_ID, EPOCH) if c in cols]
    changed = 0
    for n, line in enumerate(lines[1:], 1):
        cells = _whole_line(line, len(cols), keys)
        if cells is None:
            continue
        new = [logs.fmt_cell(rounded(at[i], c)) if i in at and c else c
               for i, c in enumerate(cells)]
        if new != cells:
            lines[n], changed = ",".join(new), changed + 1
    if changed:
        logs.write_atomic(path, "\n".join(lines))
    return changed


def _whole_line(line: str, n_cols: int, keys: list[int]) -> list[str] | None:
    """The cells of a whole data line of the table (``n_cols`` cells, digits at the
    ``keys`` positions), None for any other line, e.g. one cut by a kill."""
    cells = line.split(",")
    if len(cells) != n_cols or not all(cells[k].isdigit() for k in keys):
        return None
    return cells


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return str(a) == str(b)


# ----------------------------------------------------------------------------- progress
def read_progress(path: Path, max_t: int) -> dict[tuple[int, int], dict]:
    """(config_id, replicate) -> {"epochs": set of ok epochs, "failed": bool, "params":
    {...}, "complete": bool} from an existing table (empty when there is none)."""
    import pandas as pd

    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return {}
    df = pd.read_csv(path, on_bad_lines="skip", keep_default_na=False,
                     na_values={VAL_LOSS: [""], TRAIN_LOSS: [""], EPOCH_SECONDS: [""]})
    if REPLICATE not in df.columns:
        df[REPLICATE] = "0"
    df = df[df[CONFIG_ID].astype(str).str.isdigit() & df[EPOCH].astype(str).str.isdigit()
            & df[REPLICATE].astype(str).str.isdigit()]
    out: dict[tuple[int, int], dict] = {}
    p_cols = [c for c in df.columns if c.startswith(PARAM_PREFIX)]
    for (cid, rep), g in df.groupby([df[CONFIG_ID].astype(int), df[REPLICATE].astype(int)]):
        ok = set(g.loc[g[STATUS] == STATUS_OK, EPOCH].astype(int))
        fail = g.loc[g[STATUS] == STATUS_FAILED, EPOCH].astype(int)
        failed = len(fail) > 0
        complete = ok >= set(range(1, max_t + 1)) or (
            failed and ok >= set(range(1, int(fail.min()))))
        out[int(cid), int(rep)] = {"epochs": ok, "failed": failed, "complete": bool(complete),
                                   "params": {c[len(PARAM_PREFIX):]: g[c].iloc[0]
                                              for c in p_cols}}
    return out


# ----------------------------------------------------------------------------- shards
def shard_path(table: Path, i: int, n: int) -> Path:
    """The file shard ``i`` of ``n`` fills: ``lctable.csv`` -> ``lctable.shard0of4.csv``."""
    table = Path(table)
    return table.with_name(f"{table.stem}.shard{i}of{n}{table.suffix}")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> (i, n); ``"auto"``: a Slurm array task's or an MPI rank's place (from the
    launcher's environment); None -> None. ValueError for anything else."""
    if text is None:
        return None
    if text == "auto":
        env = os.environ
        for idx, cnt in (("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"),
                         ("PMI_RANK", "PMI_SIZE"), ("PMIX_RANK", "PMIX_SIZE"),
                         ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")):
            if env.get(idx, "").isdigit() and env.get(cnt, "").isdigit():
                i, n = int(env[idx]), int(env[cnt])
                if idx.startswith("SLURM"):  # array ids may start at 1 (--array=1-4)
                    i -= int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
                return parse_shard(f"{i}/{n}")
        raise ValueError("--shard auto: no Slurm array or MPI launcher in the environment")
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4, or auto") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def merge(table: Path) -> int:
    """Join the shard files next to ``table`` into it: rows keyed by (config, replicate,
    epoch), the table's own first, then the shards in order; sorted; written at once
    (temp, fsync, rename). Shard files whose rows are all in the table are removed. Returns
    the number of shards merged; ValueError when their columns differ, or when a run still
    writes a shard or the table (it holds the file's lock: :func:`_lock`), before anything is
    changed. The locks are held until the merge is done, so no run starts on them meanwhile."""
    table = Path(table)
    shards = sorted(table.parent.glob(f"{table.stem}.shard*of*{table.suffix}"))
    if not shards:
        return 0
    held = []
    try:
        for f in [table, *shards] if table.exists() else shards:
            held.append(_lock(f, busy=f"{f} is still being written by a running lctable run; "
                                      "wait for it to end, then --merge"))
        return _merge(table, shards)
    finally:
        for fd in held:
            os.close(fd)


def _merge(table: Path, shards: list[Path]) -> int:
    """:func:`merge` once it holds the locks."""
    header, rows = None, {}
    for f in [table, *shards] if table.exists() else shards:
        lines = f.read_text().splitlines()
        if not lines:
            continue
        if header is None:
            header = lines[0]
        elif lines[0] != header:
            raise ValueError(f"{f} has other columns than {table}; not merged")
        cols = header.split(",")
        ki = [cols.index(c) for c in (CONFIG_ID, REPLICATE, EPOCH)]
        for line in lines[1:]:
            cells = _whole_line(line, len(cols), ki)
            if cells is None:
                continue  # a line cut by a kill
            rows.setdefault(tuple(int(cells[k]) for k in ki), line)
    logs.write_atomic(table, "\n".join([header, *(rows[k] for k in sorted(rows))]) + "\n")
    meta = logs.read_json(meta_path(shards[0])) or {}
    segments = [seg for f in shards for seg in (logs.read_json(meta_path(f)) or {})
                .get("segments", [])]
    old = logs.read_json(meta_path(table)) or {}
    meta.update(shard=None, segments=[*old.get("segments", []), *segments],
                merged_shards=[f.name for f in shards])
    if {"n_configs", "replicates", "max_t"} <= set(meta):
        done = read_progress(table, int(meta["max_t"]))
        todo = trainings(int(meta["n_configs"]), tuple(meta["replicates"]))
        meta["status"] = "complete" if all(done.get(t, {}).get("complete") for t in todo) \
            else "incomplete"
    logs.write_json(meta_path(table), meta)
    for f in shards:
        f.unlink()
        meta_path(f).unlink(missing_ok=True)
    return len(shards)


# ----------------------------------------------------------------------------- workers
_W: dict = {}  # per worker process: progress queue, threads


def _init_worker(queue, threads: int, parent: int | None = None) -> None:
    _W.update(queue=queue, threads=threads)
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool
    if parent is not None:  # a run killed outright (SIGKILL, OOM) leaves no worker training
        from experiments.procs import die_with

        die_with(parent)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # the run's interrupted path: pool stopped, metadata written


class _Diverged(Exception):
    pass


def train_config(task: dict) -> tuple[int, str]:
    """Train one configuration and append its rows; returns ``(config_id, status)``.

    ``task``: config_id, config (overrides), params (p: values), scale, max_t, seed,
    trainable, path, columns, recorded (epochs already in the table), checkpoint_dir.
    """
    from experiments.trainables import get_trainable

    cid, path, columns = task["config_id"], Path(task["path"]), task["columns"]
    rep = task.get("replicate", 0)
    recorded = set(task["recorded"])
    queue = _W.get("queue")
    base = {CONFIG_ID: cid, REPLICATE: rep,
            **{PARAM_PREFIX + k: v for k, v in task["params"].items()}}
    trainable = get_trainable(task["trainable"])
    st = {"t": time.perf_counter(), "last": 0}

    def write(epoch: int, values: dict) -> None:
        values = {k: rounded(k, v) for k, v in values.items()}
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
                          REASON: "", **{k: m.get(k) for k in logs.LC_EXTRA}})
        st["t"], st["last"] = time.perf_counter(), epoch
        return False

    ckpt = task.get("checkpoint_dir")
    status = STATUS_OK
    try:
        history = trainable.train(task["scale"], task["config"], task["max_t"], on_epoch,
                                  seed=replicate_seed(task["seed"], rep),
                                  threads=_W.get("threads", 1),
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


# ----------------------------------------------------------------------------- claim-2 world
WORLD_RULE = ("the whole table when it is complete, else its default and configurations "
              "1..N with every replicate (analysis/preregistration.md)")


def write_world(path: Path, out: Path, first: int = 512) -> str:
    """Write the world of the pre-registered claim-2 test to ``out`` (CSV and JSON):
    :data:`WORLD_RULE` with N = ``first``. Every training of it must be done (to max_t, or
    failed): a configuration 1..N still training, or not yet started, while later ones are
    done raises ValueError. The JSON is the table's with ``n_configs`` = N and a ``world``
    record (source, its sha256, N); the same table gives the same bytes. Returns a line."""
    path, out = Path(path), Path(out)
    meta = logs.read_json(meta_path(path))
    if not isinstance(meta, dict) or not meta.get("n_configs") or not meta.get("replicates") \
            or not meta.get("max_t"):
        raise ValueError(f"{meta_path(path)}: no table metadata (n_configs, replicates, max_t)")
    if first < 1:
        raise ValueError(f"--first must be >= 1, got {first}")
    raw = path.read_bytes()
    lines = raw.decode().splitlines()
    header = lines[0].split(",")
    try:
        ci, ri, ei, si = (header.index(c) for c in (CONFIG_ID, REPLICATE, EPOCH, STATUS))
    except ValueError:
        raise ValueError(f"{path}: not a learning-curve table (its header)") from None
    complete = meta.get("status") == "complete"
    n = int(meta["n_configs"]) if complete else min(int(first), int(meta["n_configs"]))
    planned = {t for t in trainings(int(meta["n_configs"]), tuple(meta["replicates"]))
               if t[0] <= n}
    last: dict[tuple[int, int], int] = {}
    failed: set[tuple[int, int]] = set()
    keep = []
    for line in lines[1:]:
        cells = line.split(",")
        try:
            key = (int(cells[ci]), int(cells[ri]))
            epoch = int(cells[ei])
        except (ValueError, IndexError):
            continue  # a damaged row: the reader reports it; the world leaves it out
        if key not in planned:
            continue
        keep.append(line)
        last[key] = max(last.get(key, 0), epoch)
        if cells[si] == STATUS_FAILED:
            failed.add(key)
    max_t = int(meta["max_t"])
    missing = sorted(t for t in planned if t not in failed and last.get(t, 0) < max_t)
    if missing:
        c, r = missing[0]
        raise ValueError(f"{path}: {len(missing)} training(s) of configurations 0..{n} not done "
                         f"yet (the first: configuration {c}, replicate {r}); `make lctable` "
                         "finishes them")
    world = {**meta, "n_configs": n, "world": {
        "of": f"{path.parent.name}/{path.name}", "sha256": hashlib.sha256(raw).hexdigest(),
        "first": n, "rule": WORLD_RULE}}
    out.parent.mkdir(parents=True, exist_ok=True)
    logs.write_atomic(out, "\n".join([lines[0], *keep]) + "\n")
    logs.write_json(meta_path(out), world)
    return (f"claim-2 world: {'the whole table' if complete else f'configurations 0..{n}'} of "
            f"{world['world']['of']} ({len(planned)} trainings, {len(keep)} rows) -> {out}")


# ----------------------------------------------------------------------------- main
def _lock(path: Path, busy: str | None = None) -> int:
    """An exclusive lock on the table (or shard) for this run (a second run on it, or a
    merge of it, is refused with ValueError(``busy``))."""
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(busy or f"{path}: another lctable run is writing this table") from None
    return fd


def _threads() -> int:
    return int(os.environ.get(THREADS_ENV) or 1)


def checkpoint_root(table: Path, scale: str, seed: int) -> Path:
    """Default folder of the training states of ``table``: ``runs/lctable-<scale>-seed<k>-<key>``,
    the key the first 8 hex digits of the sha256 of the table's absolute path (its shards
    share it), so that a table made elsewhere (another --out, another trainable or loss) never
    resumes this one's unfinished trainings."""
    from mlpf.paths import ROOT

    key = hashlib.sha256(str(Path(table).resolve()).encode()).hexdigest()[:8]
    return ROOT / "runs" / f"lctable-{scale}-seed{seed}-{key}"


def run(scale: str, n_configs: int | None = None, workers: int = 2, seed: int = 0,
        out: str | Path | None = None, trainable: str = "mlpf",
        checkpoints: str | Path | None = None, progress: bool = True,
        sampler: str | None = None, replicates: tuple[int, int, int] | None = None,
        shard: tuple[int, int] | None = None) -> int:
    """Fill the table (resuming); returns an exit code (0: every configuration complete).

    ``sampler``: ``sobol`` for a new table; an existing table keeps the one it was made with
    (``random`` for tables from before the choice existed). ``replicates``: (seeds of the
    default, seeds of each replicated configuration, replicated configurations), default
    :data:`DEFAULT_REPLICATES`. ``shard=(i, n)``: only the trainings ``k`` with ``k % n == i``
    (:func:`trainings` order), into the shard's own file (:func:`shard_path`); :func:`merge`
    joins the shards into the table."""
    from experiments.trainables import get_trainable
    from mlpf.scales import get_scale

    max_t = get_scale(scale).max_epochs
    tr = get_trainable(trainable)
    tr.check_ready(scale)
    n_configs = DEFAULT_CONFIGS[scale] if n_configs is None else int(n_configs)
    replicates = tuple(replicates or DEFAULT_REPLICATES[scale])
    table = Path(out) if out else table_path(scale)
    path = shard_path(table, *shard) if shard else table
    ckpt_root = Path(checkpoints) if checkpoints else checkpoint_root(table, scale, seed)
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

    # a shard run skips what the table it is merged into already holds (a rerun after --merge)
    merged = shard is not None and table.exists() and meta_path(table).exists()
    for where, made in ((path, old_meta), (table, logs.read_json(meta_path(table)) if merged
                                           else None)):
        if made is None:
            continue
        for key, want in (("scale", scale), ("seed", seed), ("trainable", trainable),
                          (logs.LOSS, tr.loss_spec(scale))):
            if logs.native_json(made.get(key)) != logs.native_json(want):
                raise ValueError(f"{where} was made with {key}={made.get(key)!r}, not "
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
        try:
            changed = compact(path)
        except OSError as e:
            raise ValueError(f"cannot write the table {path}: {e.strerror}") from None
        if changed:  # a table begun before its cells were rounded: the file is a new one
            fresh = _lock(path)
            os.close(lock)
            lock = fresh
        return _fill(scale, path, configs, params, columns, max_t, seed, workers, trainable, tr,
                     old_meta, ckpt_root, progress, sampler, replicates, shard,
                     merged=read_progress(table, max_t) if merged else {})
    finally:
        os.close(lock)


def _load() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the system has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _fill(scale, path, configs, params, columns, max_t, seed, workers, trainable, tr, old_meta,
          ckpt_root, progress, sampler, replicates, shard, merged) -> int:
    """The part of :func:`run` that holds the table's lock. ``merged``: the progress of the
    table a shard is merged into (:func:`read_progress`); its complete trainings are skipped."""
    n_configs = len(configs) - 1
    done = read_progress(path, max_t)
    for (cid, _), d in [*done.items(), *merged.items()]:
        if cid < len(params) and not all(_same(d["params"].get(k), v)
                                         for k, v in params[cid].items()):
            raise ValueError(f"{path}: configuration {cid} differs from the one drawn with "
                             f"seed {seed}; pass another --out")
    done.update({t: d for t, d in merged.items() if d["complete"]})  # already in the table
    logs.end_with_newline(path)

    mine = [t for i, t in enumerate(trainings(n_configs, replicates))
            if shard is None or i % shard[1] == shard[0]]
    tasks = []
    for cid, rep in mine:
        d = done.get((cid, rep))
        if d and d["complete"]:
            continue
        ckpt = ckpt_root / (f"config{cid}" if rep == 0 else f"config{cid}-r{rep}")
        tasks.append({"config_id": cid, "replicate": rep, "config": configs[cid],
                      "params": params[cid], "scale": scale, "max_t": max_t, "seed": seed,
                      "trainable": trainable, "path": str(path), "columns": columns,
                      "recorded": sorted(d["epochs"]) if d else [], "checkpoint_dir": str(ckpt)})
    if not tasks and shard is None and old_meta and old_meta.get("status") == "complete" and \
            old_meta.get("n_configs") == n_configs and \
            list(old_meta.get("replicates") or []) == list(replicates):
        # nothing to train: lctable.json keeps the machine and segments of the trainings
        print(f"lctable {scale}: complete; {len(mine)}/{len(mine)} trainings, "
              f"{old_meta.get('n_failed', 0)} failed, nothing to train -> {path}",
              file=sys.stderr)
        return 0
    now = time.time()
    machine = machine_info()
    # each segment (a run or a resume) names its CPU and the load it met: a table resumed on
    # another machine says so, though lctable.json's ``machine`` is the last one
    segment = {"start_iso": iso(now), "end_iso": None, "workers": workers,
               "threads": _threads(), "host": socket.gethostname(),
               "cpu_model": machine.get("cpu_model"), "load_start": _load()}
    meta = old_meta or {"scale": scale, "seed": seed, "max_t": max_t, "trainable": trainable,
                        "trainable_options": tr.options(), logs.LOSS: tr.loss_spec(scale),
                        "versions": versions(),
                        "git_commit": git_commit(), "host": socket.gethostname(),
                        "start_iso": iso(now), "segments": []}
    meta.update(n_configs=n_configs, sampler=sampler, replicates=list(replicates),
                replicate_seed_stride=REPLICATE_SEED_STRIDE,
                shard=f"{shard[0]}/{shard[1]}" if shard else None, workers=workers,
                threads=_threads(),
                devices=1, machine=machine, status="running", end_iso=None,
                columns=list(columns),
                precision={"loss_digits": LOSS_DIGITS, "seconds_decimals": SECONDS_DECIMALS,
                           "seconds_tiny_digits": SECONDS_TINY_DIGITS})
    meta["segments"] = [*meta.get("segments", []), segment]
    logs.write_json(meta_path(path), meta)

    remaining = sum(max_t - len(t["recorded"]) for t in tasks)
    print(f"lctable {scale}: {len(mine)} trainings of {len(configs)} configurations "
          f"({len(mine) - len(tasks)} complete), {remaining} epochs to train on {workers} "
          f"workers -> {path}", file=sys.stderr, flush=True)
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
        pool = ctx.Pool(min(workers, len(tasks)), _init_worker, (queue, _threads(), os.getpid()))
        t_start, trained = time.monotonic(), 0
        previous = signal.signal(signal.SIGTERM, _terminate)  # a batch system's stop: as ^C
        try:
            pending = pool.imap_unordered(train_config, tasks)
            while len(results) < len(tasks):
                try:
                    results.append(pending.next(timeout=0.2))
                    while not queue.empty():
                        trained += queue.get()
                    if bar is not None:
                        bar.write(f"config {results[-1][0]}: {results[-1][1]}")
                    else:  # a plain line per training: elapsed and ETA by epochs left
                        elapsed = time.monotonic() - t_start
                        eta = elapsed / max(1, trained) * max(0, remaining - trained)
                        print(f"lctable {scale}: [{len(mine) - len(tasks) + len(results)}/"
                              f"{len(mine)}] config {results[-1][0]}: {results[-1][1]}; "
                              f"elapsed {duration(elapsed)}, ETA {duration(eta)}",
                              file=sys.stderr, flush=True)
                except mp.TimeoutError:
                    pass
                while not queue.empty():
                    n = queue.get()
                    trained += n
                    if bar is not None:
                        bar.update(n)
            pool.close()
        except KeyboardInterrupt:
            pool.terminate()
            status = "interrupted"
        finally:
            signal.signal(signal.SIGTERM, previous)
            pool.join()
            if bar is not None:
                bar.close()
    final = read_progress(path, max_t)
    incomplete = [t for t in mine if not (final.get(t, {}).get("complete")
                                          or merged.get(t, {}).get("complete"))]
    if status == "complete" and incomplete:
        status = "incomplete"
    meta["status"] = status
    meta["end_iso"] = segment["end_iso"] = iso(time.time())
    segment["load_end"] = _load()
    meta["n_failed"] = sum(1 for d in final.values() if d["failed"])
    logs.write_json(meta_path(path), meta)
    if status == "complete" and ckpt_root.exists() and not any(ckpt_root.iterdir()):
        ckpt_root.rmdir()
    print(f"lctable {scale}: {status}; {len(mine) - len(incomplete)}/{len(mine)} "
          f"trainings, {meta['n_failed']} failed -> {path}", file=sys.stderr)
    return {"complete": 0, "interrupted": 130}.get(status, 1)


def main(argv=None) -> int:
    p = Parser("python -m experiments.lctable", __doc__)
    add_scale(p)
    p.add_argument("--configs", type=int, default=None,
                   help=f"sampled configurations besides the default ({DEFAULT_CONFIGS})")
    add_workers(p, "parallel trainings")
    p.add_argument("--seed", type=seed_value, default=0, help="sampling and training seed")
    p.add_argument("--out", default=None, help="table CSV (default results/<scale>/lctable.csv)")
    p.add_argument("--trainable", default="mlpf", help="mlpf | synthetic")
    p.add_argument("--checkpoints", default=None,
                   help="training states (default runs/lctable-<scale>-seed<k>-<key>/, the "
                   "key a hash of the table's path)")
    p.add_argument("--sampler", default=None, choices=SAMPLERS,
                   help="configurations: a scrambled Sobol sequence (default for a new table) "
                   "or independent random draws")
    p.add_argument("--replicates", default=None,
                   help="D,K,M: training seeds of the default (D) and of each of the first M "
                   f"sampled configurations (K) (default {DEFAULT_REPLICATES})")
    p.add_argument("--shard", default=None,
                   help="i/n: train only the trainings k with k %% n == i, into the shard's own "
                   "file (Slurm arrays, MPI ranks: auto); then --merge")
    p.add_argument("--merge", action="store_true",
                   help="join the shard files into the table and stop")
    p.add_argument("--world", default=None, metavar="PATH",
                   help="write the world of the pre-registered claim-2 test to PATH (the whole "
                        "table when complete, else configurations 0..--first) and stop")
    p.add_argument("--first", type=int, default=512, help="with --world (default 512)")
    p.add_argument("--quiet", action="store_true",
                   help="a plain line per finished training instead of a progress bar")

    def body() -> int:
        a = p.parse_args(argv)
        check_workers(a.workers, allow=a.allow_oversubscribe)
        try:
            if a.configs is not None and a.configs < 0:
                raise ValueError("--configs must be >= 0")
            if a.world:
                print(write_world(Path(a.out) if a.out else table_path(a.scale),
                                  Path(a.world), a.first), file=sys.stderr)
                return 0
            if a.merge:
                n = merge(Path(a.out) if a.out else table_path(a.scale))
                print(f"merged {n} shards", file=sys.stderr)
                return 0
            reps = None
            if a.replicates is not None:
                try:
                    reps = tuple(int(x) for x in a.replicates.split(","))
                except ValueError:
                    reps = ()
                if len(reps) != 3 or min(reps[:2]) < 1 or reps[2] < 0:
                    raise ValueError("--replicates D,K,M: D, K >= 1 and M >= 0, e.g. 5,3,32")
            return run(a.scale, a.configs, a.workers, a.seed, a.out, a.trainable,
                       a.checkpoints, progress=not a.quiet, sampler=a.sampler, replicates=reps,
                       shard=parse_shard(a.shard))
        except (ValueError, FileNotFoundError) as e:
            raise CliError(str(e)) from None

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
