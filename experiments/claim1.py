"""Claim-1 references: what "tuning cut the validation loss by 44 %" is measured against.

    python -m experiments.claim1 --scale small            # or: make claim1 (resumable)
    python -m experiments.claim1 --scale smoke --seeds 2 --trainable synthetic --out /tmp/c1

Four references, each trained with ``--seeds`` training seeds (default 5) on the scale's data,
every epoch recorded with its validation components (mlpf/loss.py):

- ``default``: the study era's untuned default (:mod:`mlpf.scales`), max_t epochs;
- ``default_lr``: the same with only its learning rate set by hand, each of
  :data:`HAND_LRS` (what a physicist would try before any search); the one with the best mean
  final loss is the hand-tuned default;
- ``converged``: the default trained ``CONVERGED_FACTOR`` x max_t epochs (how much of a gap is
  undertraining); its schedule is the default's, unchanged;
- ``paper_best``: the study's own best configuration (:func:`paper_best`), mapped to the scale
  by the same width, bin and schedule rules as the default and the search space.

Output in ``results/<scale>/claim1/`` (columns in :mod:`experiments.logs`): ``runs.csv`` (one
row per finished training: reference, lr, seed, epochs, final val_loss and components, wall
and CPU seconds), ``learning_curves.csv`` (one row per epoch) and ``metadata.json``
(configurations, the loss, the schedule factor, machine, versions). Rows are appended as they
finish; a rerun skips finished trainings and continues unfinished ones from their per-epoch
checkpoints (``runs/claim1-<scale>/``). The report (improvements with bootstrap intervals) is
:mod:`analysis.claim1`.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
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
)
from experiments.provenance import git_commit, iso, machine_info, versions

REFERENCES = ("default", "default_lr", "converged", "paper_best")
HAND_LRS = (1e-4, 3e-4, 1e-3, 3e-3)  # the learning rates a physicist tries by hand
CONVERGED_FACTOR = 4  # converged: this many times max_t epochs
DEFAULT_SEEDS = 5
# The study's best configuration (Nov 2021; ../shared notes: "lr ~1.1e-3, bin_size 64,
# distance_dim 64, 3 node messages, 3 + 2 graph layers, dropout ~0.016"), at the paper's
# scale (events of 6,400 elements, width factor 1). Every other key is the default's.
PAPER_BEST = dict(lr=1.1e-3, bin_size=64, distance_dim=64, num_node_messages=3,
                  num_graph_layers_common=3, num_graph_layers_energy=2, dropout=0.016)


@dataclass(frozen=True)
class Run:
    """One training of a reference: its key (reference, lr, seed), overrides and epochs."""

    reference: str
    lr: float
    seed: int
    overrides: dict = field(hash=False)
    epochs: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.reference, lr_text(self.lr), self.seed)

    @property
    def name(self) -> str:
        return f"{self.reference}-lr{lr_text(self.lr)}-seed{self.seed}"


def lr_text(lr) -> str:
    """A learning rate as runs.csv writes it (``1e-4``, ``0.0011``): one key per value."""
    return f"{float(lr):.6g}"


def paper_best(scale: str) -> dict:
    """:data:`PAPER_BEST` mapped to ``scale``: widths times the width factor, bins at the
    same bins per event (:func:`experiments.space.bin_sizes`' rule), the rest as it is."""
    from experiments.space import PAPER_EVENT_ELEMENTS
    from mlpf.scales import get_scale

    sc = get_scale(scale)
    cfg = dict(PAPER_BEST)
    cfg["distance_dim"] = max(1, round(cfg["distance_dim"] * sc.width_factor))
    cfg["bin_size"] = max(1, round(cfg["bin_size"] * sc.event_elements / PAPER_EVENT_ELEMENTS))
    return cfg


def plan(scale: str, seeds: int = DEFAULT_SEEDS, references=REFERENCES) -> list[Run]:
    """Every training of the references, cheapest first within a seed so that a partial run
    holds every reference early: default, default_lr, paper_best, then converged."""
    from mlpf.scales import get_scale

    sc = get_scale(scale)
    max_t, lr0 = sc.max_epochs, float(sc.default["lr"])
    out: list[Run] = []
    for s in range(seeds):
        for ref in ("default", "default_lr", "paper_best", "converged"):
            if ref not in references:
                continue
            if ref == "default":
                out.append(Run(ref, lr0, s, {}, max_t))
            elif ref == "default_lr":
                out += [Run(ref, lr, s, {"lr": lr}, max_t) for lr in HAND_LRS]
            elif ref == "paper_best":
                pb = paper_best(scale)
                out.append(Run(ref, pb["lr"], s, pb, max_t))
            else:
                out.append(Run(ref, lr0, s, {}, CONVERGED_FACTOR * max_t))
    return out


# ----------------------------------------------------------------------------- progress
def _key_of(row) -> tuple[str, str, int] | None:
    try:
        return (str(row[logs.REFERENCE]), lr_text(row[logs.LR]), int(row[logs.SEED]))
    except (KeyError, TypeError, ValueError):
        return None


def read_done(out: Path) -> tuple[set, dict]:
    """(keys of finished trainings in runs.csv, {key: set of epochs in learning_curves.csv})."""
    runs = logs.read_checked_csv(out / "runs.csv", (logs.SEED,), (logs.LR,))
    done = set()
    if runs is not None:
        for _, r in runs.iterrows():
            k = _key_of(r)
            if k is not None:
                done.add(k)
    curves = logs.read_checked_csv(out / logs.LEARNING_CURVES_CSV, (logs.SEED, logs.EPOCH),
                                   (logs.LR,))
    epochs: dict = {}
    if curves is not None:
        for _, r in curves.iterrows():
            k = _key_of(r)
            if k is not None:
                epochs.setdefault(k, set()).add(int(r[logs.EPOCH]))
    return done, epochs


def _schedule(default) -> dict | None:
    """A recorded default with its decay length in steps of the run (lr_decay_steps x
    step_scale), so that a default recorded with the length already multiplied out compares
    equal to the same schedule written as study steps and a step_scale."""
    if not isinstance(default, dict):
        return default
    d = dict(default)
    scale = d.pop("step_scale", 1.0)
    if isinstance(d.get("lr_decay_steps"), (int, float)) and isinstance(scale, (int, float)):
        d["lr_decay_steps"] = float(f"{d['lr_decay_steps'] * scale:.9g}")
    return d


# ----------------------------------------------------------------------------- training
_W: dict = {}


def _init_worker(threads: int) -> None:
    _W["threads"] = threads


def _train(task: dict) -> tuple[str, str, float]:
    """Train one run, appending its curve rows and then its runs.csv row; returns (name,
    status, seconds)."""
    from experiments.trainables import get_trainable

    run: Run = task["run"]
    out = Path(task["out"])
    recorded = set(task["recorded"])
    key = {logs.REFERENCE: run.reference, logs.LR: lr_text(run.lr), logs.SEED: run.seed}
    trainable = get_trainable(task["trainable"])
    t0 = time.perf_counter()
    last: dict = {}

    def on_epoch(m: dict) -> bool:
        if not math.isfinite(float(m["val_loss"])):
            raise FloatingPointError(f"val_loss={m['val_loss']} at epoch {m['epoch']}")
        last.update(m)
        if int(m["epoch"]) not in recorded:
            logs.append_row(out / logs.LEARNING_CURVES_CSV, {**key, **m}, logs.CLAIM1_LC_COLUMNS)
            recorded.add(int(m["epoch"]))
        return False

    status, reason = logs.STATUS_OK, ""
    history: list[dict] = []
    try:
        history = trainable.train(task["scale"], run.overrides, run.epochs, on_epoch,
                                  seed=run.seed, threads=_W.get("threads", 1),
                                  checkpoint_dir=task["checkpoint_dir"])
    except Exception as e:  # noqa: BLE001 - a failed training is a result, not a crash
        status = logs.STATUS_FAILED
        reason = "diverged" if isinstance(e, FloatingPointError) else trainable.failure_reason(e)
    for m in history:  # epochs restored from a checkpoint that the curves lack
        if int(m["epoch"]) not in recorded:
            on_epoch(m)
    final = history[-1] if history else last
    row = {**key, "epochs": len(history) or int(last.get("epoch", 0)), "status": status,
           "reason": reason,
           **{c: final.get(c) for c in (logs.VAL_LOSS, logs.VAL_LOSS_REG, *logs.VAL_COMPONENTS,
                                        logs.TRAIN_LOSS)},
           "wall_seconds": sum(float(m.get("epoch_seconds") or 0) for m in history),
           "cpu_seconds": sum(float(m.get("epoch_cpu_seconds") or 0) for m in history)}
    logs.append_row(out / "runs.csv", row, logs.CLAIM1_RUN_COLUMNS)
    if status == logs.STATUS_OK:
        shutil.rmtree(task["checkpoint_dir"], ignore_errors=True)
    return run.name, status + (f" ({reason})" if reason else ""), time.perf_counter() - t0


def run(scale: str, *, seeds: int = DEFAULT_SEEDS, workers: int = 2,
        out: str | Path | None = None, trainable: str = "mlpf",
        checkpoints: str | Path | None = None, references=REFERENCES) -> int:
    """Train every planned run that runs.csv lacks; returns 0 when all finished (ok or
    failed), 1 when interrupted."""
    from experiments.trainables import get_trainable
    from mlpf.paths import RESULTS_DIR, ROOT
    from mlpf.scales import get_scale

    sc = get_scale(scale)
    tr = get_trainable(trainable)
    try:
        tr.check_ready(scale)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    out = Path(out) if out else RESULTS_DIR / scale / logs.CLAIM1_DIR
    ckpt_root = Path(checkpoints) if checkpoints else ROOT / "runs" / f"claim1-{scale}"
    if out.exists() and not out.is_dir():
        raise CliError(f"{out} is not a folder; pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = logs.lock_folder(out)
    except logs.FolderLocked as e:
        raise CliError(str(e)) from None
    try:
        old = logs.read_json(out / logs.METADATA_JSON)
        loss = tr.loss_spec(scale)
        if old is not None:
            for k, want, norm in (("scale", scale, None), ("trainable", trainable, None),
                                  (logs.LOSS, loss, None), ("default", sc.default, _schedule)):
                norm = norm or (lambda v: v)
                if logs.native_json(norm(old.get(k))) != logs.native_json(norm(want)):
                    raise CliError(f"{out} holds runs made with another {k} "
                                   f"({old.get(k)!r}); pass another --out")
        for name, cols in (("runs.csv", logs.CLAIM1_RUN_COLUMNS),
                           (logs.LEARNING_CURVES_CSV, logs.CLAIM1_LC_COLUMNS)):
            logs.ensure_header(out / name, cols)
            head = (out / name).read_text(errors="replace").split("\n", 1)[0].split(",")
            if tuple(head) != cols:
                raise CliError(f"{out / name} has other columns than a claim-1 log; "
                               "pass another --out")
            logs.end_with_newline(out / name)
        try:
            done, epochs = read_done(out)
        except logs.LogError as e:
            raise CliError(str(e)) from None
        runs = plan(scale, seeds, references)
        todo = [r for r in runs if r.key not in done]
        if not todo and old is not None:  # nothing to add: the logs stay as they are
            print(f"claim1 {scale}: all {len(runs)} trainings finished in {out}", flush=True)
            return 0
        now = time.time()
        meta = old or {"scale": scale, "trainable": trainable, "loss": loss,
                       "default": sc.default, "start_iso": iso(now), "segments": []}
        meta.update(
            max_t=sc.max_epochs, schedule_factor=sc.schedule_factor,
            references={"default": {}, "default_lr": {"lr": list(HAND_LRS)},
                        "converged": {"epochs": CONVERGED_FACTOR * sc.max_epochs},
                        "paper_best": paper_best(scale)},
            seeds=max(seeds, int(meta.get("seeds") or 0)), versions=versions(),
            git_commit=git_commit(), machine=machine_info(), status="running")
        meta["segments"] = [*meta.get("segments", []),
                            {"start_iso": iso(now), "workers": workers,
                             "host": socket.gethostname()}]
        logs.write_json(out / logs.METADATA_JSON, meta)
        print(f"claim1 {scale}: {len(runs)} trainings, {len(runs) - len(todo)} finished, "
              f"{len(todo)} to train on {workers} workers -> {out}", flush=True)
        code = _execute(todo, scale, out, trainable, ckpt_root, epochs, workers)
        meta["status"] = "complete" if code == 0 else "interrupted"
        meta["segments"][-1]["end_iso"] = iso(time.time())
        logs.write_json(out / logs.METADATA_JSON, meta)
        return code
    finally:
        os.close(lock)


def _execute(todo: list[Run], scale, out, trainable, ckpt_root, epochs, workers) -> int:
    if not todo:
        return 0
    tasks = [{"run": r, "scale": scale, "out": str(out), "trainable": trainable,
              "checkpoint_dir": str(ckpt_root / r.name), "recorded": sorted(epochs.get(r.key, ()))}
             for r in todo]
    t0, n = time.time(), len(tasks)
    cost = [t["run"].epochs for t in tasks]
    total = sum(cost)
    ctx = mp.get_context("spawn")  # torch in the workers only
    pool = ctx.Pool(min(workers, n), _init_worker, (int(os.environ.get("EXP_THREADS") or 1),))
    try:
        done_epochs = 0
        for i, (name, status, secs) in enumerate(pool.imap_unordered(_train, tasks), 1):
            done_epochs += next(t["run"].epochs for t in tasks if t["run"].name == name)
            el = time.time() - t0
            eta = el / done_epochs * (total - done_epochs) if done_epochs else math.nan
            print(f"[{i}/{n}] {name}: {status} in {duration(secs)} | elapsed {duration(el)}"
                  f" | eta {duration(eta) if math.isfinite(eta) else '?'}", flush=True)
        pool.close()
    except KeyboardInterrupt:
        pool.terminate()
        print("interrupted: rerun the same command to continue", file=sys.stderr)
        return 1
    finally:
        pool.join()
    return 0


def main(argv=None) -> int:
    p = Parser("python -m experiments.claim1", __doc__)
    add_scale(p)
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS,
                   help=f"training seeds per reference (default {DEFAULT_SEEDS})")
    add_workers(p, "parallel trainings")
    p.add_argument("--references", default=",".join(REFERENCES),
                   help=f"comma-separated subset of {', '.join(REFERENCES)}")
    p.add_argument("--out", default=None, help="folder (default results/<scale>/claim1)")
    p.add_argument("--trainable", default="mlpf", choices=("mlpf", "synthetic"))
    p.add_argument("--checkpoints", default=None, help="per-epoch checkpoints (resume)")

    def body() -> int:
        a = p.parse_args(argv)
        if not 1 <= a.seeds <= 1000:
            raise CliError(f"--seeds must be 1 to 1000, got {a.seeds}")
        refs = tuple(r.strip() for r in a.references.split(",") if r.strip())
        bad = [r for r in refs if r not in REFERENCES]
        if bad or not refs:
            raise CliError(f"unknown reference {', '.join(bad) or '(none)'}; choose from "
                           f"{', '.join(REFERENCES)}")
        check_workers(a.workers, allow=a.allow_oversubscribe, per_core=1)  # a core a training
        return run(a.scale, seeds=a.seeds, workers=a.workers, out=a.out,
                   trainable=a.trainable, checkpoints=a.checkpoints, references=refs)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
