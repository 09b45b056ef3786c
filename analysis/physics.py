"""The physics behind the number: retrain each method's incumbent and the default, several seeds.

    python -m analysis.physics --scale small                  # every method, 3 seeds, max_t
    python -m analysis.physics --scale small --dry-run        # print the trainer commands
    python -m analysis.physics --scale small --methods hyperband asha --seeds 5 --jobs 2
    python -m analysis.physics --scale smoke --epochs 1 --max-events 20 --seeds 2   # a quick try

Runs: the untuned ``default`` and, for every method with live logs in results/<scale>/
(not the replay folder), that method's incumbent: the ended trial with the lowest final loss
(its loss at its last trained epoch) over all its searches. The overall best run is the
incumbent whose search final loss is the lowest; the table compares it with the default.

Each run is retrained to max_t (or --epochs) with seeds 0..N-1 through the trainer's CLI,
``python -m mlpf.train --scale S --epochs E --seed k --eval test --threads 1 --out DIR
--set key=value ...``, at most --jobs trainings at once, one torch thread each, into
<out>/<scale>/physics/<run>/seed<k>/ (metrics.json, learning_curve.csv, config.json,
train.log). A configuration two methods share (their searches drew the same trial) is
trained once. A finished training whose config.json matches what is asked (configuration,
seed, epochs; request.json: events, split) is kept, so a rerun resumes an interrupted
command; a training interrupted midway resumes from its checkpoint. A failed training prints
one line and the command exits 1 once the others are done. physics/choice.json records what
each run is: method, search seed, trial, final loss in the search, overrides, epochs, seeds.

The comparison goes to <out>/<scale>/physics.{md,tex,pdf,png} (:func:`render`, which
`make figures` calls too; it never trains). Trainer outputs of the previous layout,
physics/{default,best}/metrics.json (one seed, validation split), still render.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.logs import (
    DEFAULT_METHOD,
    HP_PREFIX,
    SEED_DIR,
    LogWarning,
    MissingLogsError,
    hp_columns,
    load_scale,
    read_json_object,
    tidy,
)
from analysis.tables import best_configs, fmt_value, write_table
from mlpf.cli import duration as clock
from mlpf.cli import positive_int, too_many_workers
from mlpf.paths import FIGURES_DIR, RESULTS_DIR
from mlpf.scales import SCALES, get_scale

# ---- files -------------------------------------------------------------------------------
METRICS_JSON = "metrics.json"  # written by mlpf.train
CURVE_CSV = "learning_curve.csv"  # written by mlpf.train
CONFIG_JSON = "config.json"  # written by mlpf.train: resolved config, scale, epochs, seed
CHOICE_JSON = "choice.json"  # which trial each run is, written here into physics/
REQUEST_JSON = "request.json"  # what this command asked of one training, written here
TRAIN_LOG = "train.log"
# What a training leaves in its folder; removed before a folder is reused for another request.
TRAINER_OUTPUTS = (METRICS_JSON, CURVE_CSV, CONFIG_JSON, REQUEST_JSON, TRAIN_LOG, "model.pt",
                   "checkpoint")

EVAL_SPLIT = "test"  # the physics table is scored on held-out events never used in a search
SEEDS = 3  # training seeds per run
OLD_BEST = "best"  # the previous layout: physics/{default,best}/, one seed, validation split
POLL_S = 0.5  # seconds between looks at the running trainings


def flatten(d, prefix: str = "") -> dict[str, float]:
    """Nested dict/list of numbers -> {"a.b.0": x}; non-numeric leaves are dropped."""
    out: dict[str, float] = {}
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else None
    if items is None:
        if isinstance(d, int | float) and not isinstance(d, bool):
            out[prefix] = float(d)
        return out
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def cli_value(v) -> str:
    """A hyperparameter value for ``--set``: full precision (the table rounds, this must
    not), integer-valued floats as ints ("64.0" -> "64"), NaN as ''."""
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return ""
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    return str(v)


# ---- which runs ----------------------------------------------------------------------------
def incumbents(trials: pd.DataFrame) -> dict[str, dict]:
    """{method: its incumbent} from tidy trials (analysis.tables.best_configs: the ended
    trial with the lowest final loss over all seeds), each as {method, seed (of the search),
    job_id, final_loss, best_loss (lowest loss of any of its epochs), overrides: {hp: value}}."""
    best = best_configs(trials)
    hps = hp_columns(best)
    out = {}
    for _, r in best.iterrows():
        out[r["method"]] = {
            "method": r["method"], "seed": int(r["seed"]), "job_id": fmt_value(r["job_id"]),
            "final_loss": float(r["final_loss"]), "best_loss": float(r["best_loss"]),
            "overrides": {c[len(HP_PREFIX):]: cli_value(r[c]) for c in hps
                          if cli_value(r[c]) != ""}}
    return out


def choose_best(scale: str, results: Path, method: str | None = None) -> dict:
    """The incumbent at this scale (of ``method`` if given): the ended trial with the lowest
    final loss, as :func:`incumbents` describes it."""
    trials, _ = tidy(load_scale(Path(results) / scale))
    inc = incumbents(trials)
    if method is not None:
        inc = {m: c for m, c in inc.items() if m == method}
    if not inc:
        raise MissingLogsError(f"no finished trial{' of ' + method if method else ''} "
                               f"under {Path(results) / scale}")
    return min(inc.values(), key=lambda c: c["final_loss"])  # ties: the earlier method


def select_runs(scale: str, results: Path,
                methods: list[str] | None = None) -> tuple[dict[str, dict], str, list[str]]:
    """(runs, best, left_out): runs = {"default": ..., method: its incumbent, ...} in the
    logs' method order, best = the method whose incumbent has the lowest search final loss,
    left_out = methods with logs but no ended trial. Raises MissingLogsError when there are
    no logs, a method of ``methods`` has none, or no method has an ended trial."""
    logs = load_scale(Path(results) / scale)  # live searches only: replay/ is skipped
    present = [m for m in logs if m != DEFAULT_METHOD]
    unknown = [m for m in methods or () if m not in present]
    if unknown:
        raise MissingLogsError(f"no logs of {', '.join(unknown)} under {Path(results) / scale}"
                               f" (methods with logs: {', '.join(present)})")
    trials, _ = tidy(logs)
    inc = incumbents(trials)
    wanted = [m for m in present if not methods or m in methods]
    left_out = [m for m in wanted if m not in inc]
    wanted = [m for m in wanted if m in inc]
    if not wanted:
        raise MissingLogsError(f"no finished trial of {', '.join(left_out)} under "
                               f"{Path(results) / scale}")
    default = {"method": DEFAULT_METHOD, "seed": None, "job_id": None, "final_loss": None,
               "best_loss": None, "overrides": {}}
    d = trials[(trials["method"] == DEFAULT_METHOD) & trials["final_loss"].notna()]
    if len(d):  # the default's own training to max_t, for the record
        r = d.sort_values(["seed", "job_id"], kind="mergesort").iloc[0]
        default.update(seed=int(r["seed"]), job_id=fmt_value(r["job_id"]),
                       final_loss=float(r["final_loss"]), best_loss=float(r["best_loss"]))
    runs = {DEFAULT_METHOD: default, **{m: inc[m] for m in wanted}}
    best = min(wanted, key=lambda m: inc[m]["final_loss"])  # ties: the earlier method
    return runs, best, left_out


# ---- trainings -----------------------------------------------------------------------------
def train_command(scale: str, epochs: int, out: Path, overrides: dict[str, str],
                  extra: list[str] = ()) -> list[str]:
    """The trainer's command line; ``extra`` are further trainer flags (e.g. --seed)."""
    cmd = [sys.executable, "-m", "mlpf.train", "--scale", scale, "--epochs", str(epochs),
           "--out", str(out), *extra]
    if overrides:
        cmd += ["--set", *(f"{k}={v}" for k, v in overrides.items())]
    return cmd


def request(scale: str, epochs: int, seed: int, overrides: dict, max_events: int | None,
            split: str = EVAL_SPLIT) -> dict:
    """What one training must be for its outputs to count (request.json)."""
    return {"scale": scale, "epochs": int(epochs), "seed": int(seed),
            "overrides": dict(overrides), "max_events": max_events, "eval": split}


def _same_value(a, b) -> bool:
    """An override as given ("0.001", "64", "False") against the value config.json holds."""
    def norm(v):
        s = str(v).strip().lower()
        if s in ("true", "false"):
            return float(s == "true")
        try:
            return float(s)
        except ValueError:
            return s
    x, y = norm(a), norm(b)
    if isinstance(x, float) and isinstance(y, float):
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)
    return x == y


def matches(folder: Path, req: dict) -> bool:
    """Whether ``folder`` holds (the start of) the training ``req`` asks for: request.json
    is ``req``, and the trainer's config.json has its seed, epochs, scale and every override
    (and metrics.json, where there is one, its split)."""
    folder = Path(folder)
    if read_json_object(folder / REQUEST_JSON) != json.loads(json.dumps(req)):
        return False
    cfg = read_json_object(folder / CONFIG_JSON)
    if cfg is None or (cfg.get("seed"), cfg.get("epochs"), cfg.get("scale")) != (
            req["seed"], req["epochs"], req["scale"]):
        return False
    config = cfg.get("config") or {}
    if not all(k in config and _same_value(v, config[k]) for k, v in req["overrides"].items()):
        return False
    metrics = folder / METRICS_JSON
    return not metrics.exists() or (read_json_object(metrics) or {}).get("split") == req["eval"]


def finished(folder: Path, req: dict) -> bool:
    """A training to skip: metrics.json present and the folder :func:`matches` ``req``."""
    return (Path(folder) / METRICS_JSON).exists() and matches(folder, req)


@dataclass
class Training:
    run: str
    seed: int
    folder: Path
    cmd: list[str]
    req: dict

    @property
    def name(self) -> str:
        return f"{self.run} seed {self.seed}"

    def prepare(self) -> None:
        """An empty folder, or the same request's interrupted training (its checkpoint
        resumes); outputs of any other request are removed first."""
        if self.folder.exists() and not matches(self.folder, self.req):
            for n in TRAINER_OUTPUTS:
                p = self.folder / n
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / REQUEST_JSON).write_text(json.dumps(self.req, indent=1) + "\n")


def shared(runs: dict[str, dict]) -> dict[str, str]:
    """{run: the run whose trainings it uses}: a run whose configuration an earlier run
    already has (two methods whose searches drew the same trial) is trained once."""
    first: dict[str, str] = {}
    return {r: first.setdefault(json.dumps(c["overrides"], sort_keys=True), r)
            for r, c in runs.items()}


def plan(runs: dict[str, dict], scale: str, epochs: int, seeds: int, root: Path,
         max_events: int | None = None, device: str | None = None) -> list[Training]:
    """Every (run, seed) training, seed-major (an interrupted command leaves every run with
    the same seeds done); a configuration two runs share is trained once (:func:`shared`)."""
    out = []
    same = shared(runs)
    for k in range(seeds):
        for run, c in runs.items():
            if same[run] != run:
                continue
            folder = root / run / f"seed{k}"
            extra = ["--seed", str(k), "--eval", EVAL_SPLIT, "--threads", "1", "--no-progress"]
            extra += [f for n, v in (("--max-events", max_events), ("--device", device))
                      if v is not None for f in (n, str(v))]
            out.append(Training(run, k, folder,
                                train_command(scale, epochs, folder, c["overrides"], extra),
                                request(scale, epochs, k, c["overrides"], max_events)))
    return out


def eta(mean_s: float, running_s: list[float], pending: int, jobs: int) -> float:
    """Seconds left: each running training takes the mean duration of the finished ones,
    each pending one too, spread over ``jobs`` processes."""
    left = sum(max(0.0, mean_s - s) for s in running_s) + pending * mean_s
    return left / max(1, jobs)


def _log_tail(path: Path) -> str:
    try:
        lines = [s for s in path.read_text(errors="replace").splitlines() if s.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


def run_trainings(todo: list[Training], jobs: int) -> list[Training]:
    """Run ``todo``, at most ``jobs`` at once, each logging to its train.log; one progress
    line per finished training. Returns the failed ones. Ctrl-C stops the running ones."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running, failed, took = list(todo), {}, [], []
    t0 = time.monotonic()
    try:
        while pending or running:
            while pending and len(running) < jobs:
                t = pending.pop(0)
                t.prepare()
                log = open(t.folder / TRAIN_LOG, "w")  # closed when the training ends
                proc = subprocess.Popen(t.cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                running[proc] = (t, time.monotonic(), log)
            time.sleep(POLL_S)
            for proc in [p for p in running if p.poll() is not None]:
                t, start, log = running.pop(proc)
                log.close()
                now = time.monotonic()
                n = len(todo) - len(pending) - len(running)
                if proc.returncode != 0 or not (t.folder / METRICS_JSON).exists():
                    failed.append(t)
                    tail = _log_tail(t.folder / TRAIN_LOG)
                    print(f"error: [{n}/{len(todo)}] {t.name} failed (exit {proc.returncode})"
                          f" after {clock(now - start)}: {tail or 'no output'} "
                          f"({t.folder / TRAIN_LOG})", file=sys.stderr, flush=True)
                    continue
                took.append(now - start)  # successes only: a quick failure is no estimate
                loss = (read_json_object(t.folder / METRICS_JSON) or {}).get("final") or {}
                loss = loss.get("val_loss")
                left = eta(float(np.mean(took)), [now - s for _, s, _ in running.values()],
                           len(pending), jobs)
                print(f"[{n}/{len(todo)}] {t.name}: {clock(now - start)}"
                      + (f", val loss {loss:.4f}" if isinstance(loss, float) else "")
                      + f" | elapsed {clock(now - t0)}, ETA {clock(left)}", flush=True)
    except KeyboardInterrupt:
        for proc in running:
            proc.terminate()
        for proc, (_, _, log) in running.items():
            proc.wait()
            log.close()
        raise
    return failed


# ---- the table and the figure ------------------------------------------------------------
# The trainer's metrics.json: {"split", "n_events", "final": {epoch metrics}, "mlpf":
# physics, "reference_pf": physics of the rule-based PF candidates}, physics = {"accuracy",
# "all": {...}, "classes": {name: {"efficiency", "fake_rate", "pt": {"resolution"},
# "energy": {"resolution"}}}}.
QUANTITIES = (("efficiency", ("efficiency",)), ("fake rate", ("fake_rate",)),
              ("pt resolution", ("pt", "resolution")),
              ("energy resolution", ("energy", "resolution")))
LOSS_KEY = ("val loss", "final")
# Axis labels of the figure's panels. All are ratios: no physical unit.
AXIS_LABELS = {
    "accuracy": "accuracy (fraction of elements)",
    "efficiency": "efficiency (fraction of true particles)",
    "fake rate": "fake rate (fraction of reco particles)",
    "pt resolution": "pT resolution (IQR / median of reco / true)",
    "energy resolution": "energy resolution (IQR / median of reco / true)",
}


def _get(d: dict, path: tuple) -> float:
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return float(d) if isinstance(d, int | float) and not isinstance(d, bool) else math.nan


def headline(physics: dict) -> dict[tuple[str, str], float]:
    """{(quantity, particle): value} of one physics block: accuracy, then efficiency, fake
    rate, pt and energy resolution for all particles and per class. A block of another
    shape is flattened ({(first key, rest): value}) so that nothing is silently lost."""
    if not (isinstance(physics, dict) and "all" in physics and "classes" in physics):
        flat = flatten(physics)
        return {(k.split(".")[0], ".".join(k.split(".")[1:])): v for k, v in flat.items()}
    out = {("accuracy", "all"): _get(physics, ("accuracy",))}
    groups = [("all", physics["all"]), *physics["classes"].items()]
    for q, path in QUANTITIES:
        for name, g in groups:
            out[(q, name)] = _get(g, path)
    return out


@dataclass
class Trained:
    """One trainer output folder: MLPF and rule-based PF headlines, learning curve."""
    seed: int
    mlpf: dict
    ref: dict
    curve: pd.DataFrame | None
    split: str
    n_events: int | None


def read_run(d: Path, seed: int = 0) -> Trained:
    """The trainer outputs in folder ``d`` (the final val loss first among the headline)."""
    m = json.loads((Path(d) / METRICS_JSON).read_text())
    mlpf = headline(m["mlpf"]) if "mlpf" in m else headline(m)
    split_loss = _get(m, ("loss", "total"))  # the loss on the scored split (newer trainer)
    val = _get(m, ("final", "val_loss"))
    if not math.isnan(split_loss):
        mlpf = {(f"{m.get('split', 'val')} loss", "final"): split_loss, **mlpf}
    elif not math.isnan(val):
        mlpf = {LOSS_KEY: val, **mlpf}
    ref = headline(m["reference_pf"]) if "reference_pf" in m else {}
    curve = pd.read_csv(Path(d) / CURVE_CSV) if (Path(d) / CURVE_CSV).exists() else None
    return Trained(seed, mlpf, ref, curve, str(m.get("split", "val")), m.get("n_events"))


def collect(root: Path) -> tuple[dict[str, list[Trained]], dict, bool]:
    """(runs, choice, previous_layout) under physics/: {run: its trainings, seeds ascending}.

    Current layout: <run>/seed<k>/; with a choice.json, only its runs and seeds, and only
    folders whose config matches it (a stale seed of an earlier incumbent never mixes in).
    Previous layout (when no seed folder exists): {default,best}/ with one training each."""
    root = Path(root)
    choice = read_json_object(root / CHOICE_JSON) or {}
    runs_meta = choice.get("runs") if isinstance(choice.get("runs"), dict) else None
    dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    seeded = {p.name: sorted((int(SEED_DIR.match(s.name).group(1)), s) for s in p.iterdir()
                             if s.is_dir() and SEED_DIR.match(s.name)
                             and (s / METRICS_JSON).exists())
              for p in dirs}
    seeded = {r: s for r, s in seeded.items() if s}
    if not seeded:
        old = [r for r in (DEFAULT_METHOD, OLD_BEST) if (root / r / METRICS_JSON).exists()]
        return {r: [read_run(root / r)] for r in old}, choice, True
    if runs_meta is None:
        order = sorted(seeded, key=lambda r: (r != DEFAULT_METHOD, r))
        return {r: [read_run(s, k) for k, s in seeded[r]] for r in order}, choice, False
    out = {}
    for run, c in runs_meta.items():
        keep = []
        for k, s in seeded.get(c.get("trained_as", run), []):
            req = request(choice.get("scale", root.parent.name), c["epochs"], k,
                          c["overrides"], c.get("max_events"), c.get("eval", EVAL_SPLIT))
            if k in c.get("seeds", [k]) and finished(s, req):
                keep.append(read_run(s, k))
        if keep:
            out[run] = keep
    return out, choice, False


def stats(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation, n) of the finite values; sd NaN below 2."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def _f(x: float) -> str:
    return "" if x is None or math.isnan(x) else f"{x:.4g}"


def cell(mean: float, sd: float, n: int, seeds: int | None = None) -> str:
    """'mean ± sd' over seeds (sd to two significant digits); the value alone for one seed;
    '(n=k)' appended where only k of the run's ``seeds`` trainings have a value."""
    if n == 0:
        return ""
    some = f" (n={n})" if seeds is not None and n < seeds else ""
    if n == 1 or math.isnan(sd) or math.isnan(mean):
        return _f(mean) + some
    if sd <= 1e-9 * abs(mean):  # identical seeds (8e-18 is rounding)
        return f"{_f(mean)} ± 0{some}"
    d = min(8, max(0, 1 - math.floor(math.log10(sd))))  # two significant digits of sd
    return f"{mean:.{d}f} ± {sd:.{d}f}{some}"


def change(a: tuple, b: tuple) -> tuple[float, float]:
    """(change %, its ± in %) of b's mean against a's (each (mean, sd, n)): 100 (mean_b -
    mean_a) / |mean_a|, ± 100 sqrt(sd_a^2 / n_a + sd_b^2 / n_b) / |mean_a| (one standard
    error of the difference of the means; NaN unless both have 2 seeds or more)."""
    (ma, sa, na), (mb, sb, nb) = a, b
    if not (na and nb and math.isfinite(ma) and math.isfinite(mb) and ma != 0):
        return math.nan, math.nan
    rel = 100.0 * (mb - ma) / abs(ma)
    if na < 2 or nb < 2:
        return rel, math.nan
    return rel, 100.0 * math.sqrt(sa ** 2 / na + sb ** 2 / nb) / abs(ma)


def _change_cell(rel: float, pm: float) -> str:
    if math.isnan(rel):
        return ""
    return f"{rel:+.1f}" + ("" if math.isnan(pm) else f" ± {pm:.1f}")


def _run_notes(runs: dict[str, list[Trained]], choice: dict, best: str | None) -> list[str]:
    meta = choice.get("runs") or {}
    lines = []
    for run in runs:
        c = meta.get(run)
        if not c:
            continue
        if run == DEFAULT_METHOD:
            what = "the untuned configuration"
            if c.get("final_loss") is not None:
                what += f" (final loss {c['final_loss']:.4f} in its own run to max_t)"
        else:
            what = (f"incumbent of {c['method']}: search seed {c['search_seed']} trial "
                    f"{c['job_id']}, final loss {c['final_loss']:.4f} in the search")
            if c.get("trained_as"):
                what += f"; the same configuration as {c['trained_as']}, trained once"
        lines.append(f"{run}{' (best)' if run == best else ''}: {what}.")
    return lines


def render(out: Path) -> list[Path]:
    """physics.{md,tex,pdf,png} in ``out`` from the trainer outputs in out/physics/;
    [] if there are none (then `make figures` simply has no physics table). Never trains."""
    root = Path(out) / "physics"
    runs, choice, previous = collect(root)
    if not runs:
        return []
    best = OLD_BEST if previous else choice.get("best")
    best = best if best in runs and best != DEFAULT_METHOD else None
    summ = {r: {} for r in runs}
    keys = list(dict.fromkeys(k for ts in runs.values() for t in ts for k in t.mlpf))
    for r, ts in runs.items():
        for k in keys:
            summ[r][k] = stats([t.mlpf.get(k, math.nan) for t in ts])
    ref_keys = {k: stats([t.ref.get(k, math.nan) for ts in runs.values() for t in ts])[0]
                for k in keys}

    def header(r):
        return f"{r}{' (best)' if r == best and not previous else ''}, n={len(runs[r])}"

    compare = best is not None and DEFAULT_METHOD in runs
    headers = ["quantity", "particles", *(header(r) for r in runs)]
    if compare:
        headers.append(f"change % {best} vs default" if not previous else "change %")
    headers.append("rule-based PF")
    rows = []
    for k in keys:
        row = [k[0], k[1], *(cell(*summ[r][k], len(runs[r])) for r in runs)]
        if compare:
            row.append(_change_cell(*change(summ[DEFAULT_METHOD][k], summ[best][k])))
        rows.append(row + [_f(ref_keys[k])])

    first = next(iter(runs.values()))[0]
    if previous:
        notes = ["MLPF with the default and with the best configuration, both retrained for "
                 "the same epochs (python -m analysis.physics); rule-based PF candidates for "
                 "reference.",
                 "validation split, 1 seed (previous layout): physics quantities on the "
                 "validation events, one training per run, so no spread and no interval."]
        if choice.get("method"):
            loss = choice.get("final_loss", choice.get("best_loss"))
            notes.append(f"Best: {choice['method']} seed {choice['seed']} trial "
                         f"{choice['job_id']} (final val loss in the search {loss:.4f}), "
                         f"retrained {choice.get('epochs', '?')} epochs"
                         + (f" on {choice['max_events']} events per split."
                            if choice.get("max_events") else "."))
    else:
        meta = next(iter((choice.get("runs") or {}).values()), {})
        epochs = meta.get("epochs", "?")
        notes = [f"MLPF retrained with each run's configuration for {epochs} epoch"
                 f"{'' if epochs == 1 else 's'}, one "
                 f"training per seed (python -m analysis.physics); physics quantities on the "
                 f"{first.split} split ({first.n_events} events), and so is the loss ("
                 f"{first.split} loss; val loss where the trainer recorded only that)."
                 + (f" At most {meta['max_events']} events per split."
                              if meta.get("max_events") else ""),
                 "Cells: mean ± sample standard deviation over the seeds (n in the column "
                 "header; (n=k): only k trainings have a value, e.g. a class none of them "
                 "reconstructs); the value alone with one seed.",
                 "Runs: the untuned default and each method's incumbent, the ended trial with "
                 "the lowest final loss over all its searches; best: the incumbent with the "
                 "lowest final loss in its search."]
        if compare:
            notes.append(f"change %: 100 (mean {best} - mean default) / |mean default|; ± one "
                         f"standard error of the difference of the seed means, "
                         f"sqrt(sd_best^2 / n_best + sd_default^2 / n_default), in % of "
                         f"|mean default| (shown with 2 seeds or more per run).")
        notes += _run_notes(runs, choice, best)
    notes.append("rule-based PF: the PF candidates of the same events (no training), for "
                 "reference; fake rate: fraction of reconstructed particles with no true one.")
    write_table(headers, rows, Path(out), "physics", notes)
    fig = _figure(runs, summ, ref_keys, keys, best if not previous else None)
    import analysis.figures as F  # matplotlib only when there is something to draw

    return F.save(fig, Path(out), "physics") + [Path(out) / "physics.md",
                                                  Path(out) / "physics.tex"]


def _figure(runs: dict[str, list[Trained]], summ: dict, ref: dict, keys: list, best):
    """(a) validation loss per epoch, mean over seeds with a min-max band; then one panel
    per quantity: bars = mean over seeds, error bars = standard deviation."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    from analysis.figures import PALETTE

    colors = {r: PALETTE[i % len(PALETTE)] for i, r in
              enumerate(r for r in runs if r != DEFAULT_METHOD)}
    colors[DEFAULT_METHOD] = "0.35"
    labels = {r: f"{r} (best)" if r == best else r for r in runs}
    quantities = [q for q in ("accuracy", *(q for q, _ in QUANTITIES))
                  if any(k[0] == q for k in keys)]
    n = len(quantities) + 1
    cols = min(n, 3)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.4 * nrows + 0.6),
                             squeeze=False, layout="constrained")
    axes = list(axes.flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    ax = axes[0]
    for r, ts in runs.items():
        curves = [t.curve.assign(seed=t.seed) for t in ts
                  if t.curve is not None and {"epoch", "val_loss"} <= set(t.curve.columns)]
        if not curves:
            continue
        g = pd.concat(curves).groupby("epoch")["val_loss"]
        mean, lo, hi = g.mean(), g.min(), g.max()
        ax.plot(mean.index, mean.values, color=colors[r], lw=1.4)
        if len(curves) > 1:
            ax.fill_between(mean.index, lo.values, hi.values, color=colors[r], alpha=0.2, lw=0)
    ax.set_title("(a) validation loss", fontsize="medium")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    several = any(len(ts) > 1 for ts in runs.values())
    ax.set_ylabel("validation loss" + (" (mean over seeds, band min-max)" if several else ""),
                  fontsize="small" if several else None)
    bars = [*runs, "rule-based PF"]
    h = 0.8 / len(bars)
    for i, (ax, q) in enumerate(zip(axes[1:], quantities)):
        names = [p for qq, p in keys if qq == q]
        y = np.arange(len(names))
        for j, b in enumerate(bars):
            off = (j - (len(bars) - 1) / 2) * h
            if b == "rule-based PF":
                ax.barh(y + off, [ref.get((q, p), math.nan) for p in names], h, color="white",
                        edgecolor="k", hatch="///", lw=0.6)
                continue
            m = [summ[b][(q, p)] for p in names]
            err = [s if n_ > 1 else math.nan for _, s, n_ in m]
            ax.barh(y + off, [v for v, _, _ in m], h, color=colors[b],
                    xerr=err, error_kw={"lw": 0.8, "capsize": 1.5})
        ax.set_yticks(y, names, fontsize="small")
        ax.invert_yaxis()
        ax.set_title(f"({chr(ord('b') + i)}) {q}", fontsize="medium")
        ax.set_xlabel(AXIS_LABELS.get(q, q), fontsize="small")
    handles = [Patch(facecolor=colors[r], label=labels[r]) for r in runs]
    handles.append(Patch(facecolor="white", edgecolor="k", hatch="///", label="rule-based PF"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6),
               fontsize="small", frameon=False)
    return fig


# ---- command line --------------------------------------------------------------------------
class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2 (main), no usage dump
        raise _ArgError(message)


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m analysis.physics", description=__doc__.splitlines()[0])
    ap.add_argument("--scale", required=True, choices=tuple(SCALES), help="smoke | small | paper")
    ap.add_argument("--results", type=Path, default=RESULTS_DIR, help="root of the raw logs")
    ap.add_argument("--out", type=Path, default=FIGURES_DIR, help="root of the outputs")
    ap.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                    help="only these methods' incumbents (default: every method with logs)")
    ap.add_argument("--seeds", type=positive_int, default=SEEDS,
                    help="training seeds 0..N-1 per run (default %(default)s)")
    ap.add_argument("--epochs", type=positive_int, default=None, help="default: the scale's max_t")
    ap.add_argument("--jobs", type=positive_int, default=None,
                    help="trainings at once, one thread each (default: the usable cores)")
    ap.add_argument("--max-events", type=positive_int, help="passed to the trainer (quick tries)")
    ap.add_argument("--device", help="passed to the trainer: cpu, cuda, ...")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, train nothing")
    ap.add_argument("--allow-oversubscribe", action="store_true",
                    help="run more --jobs than 4 per usable core")
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        scale = get_scale(args.scale)
        too_many = None if args.allow_oversubscribe or args.jobs is None else \
            too_many_workers(args.jobs, "--jobs")
        if too_many:
            raise ValueError(too_many)
    except (_ArgError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    methods = None
    if args.methods:  # "--methods a b" and "--methods 'a b'" or "a,b" alike
        methods = list(dict.fromkeys(m for s in args.methods for m in s.replace(",", " ")
                                     .split()))
    warnings.simplefilter("ignore", LogWarning)  # make_figures reports log problems
    try:
        runs, best, left_out = select_runs(args.scale, args.results, methods)
    except MissingLogsError as e:
        print(f"error: {e} (run `make benchmark SCALE={args.scale}` first)", file=sys.stderr)
        return 2
    for m in left_out:
        print(f"warning: {m} has no ended trial; left out", file=sys.stderr)
    epochs = args.epochs or scale.max_epochs
    jobs = args.jobs or len(os.sched_getaffinity(0))  # cores this process may use
    out = Path(args.out) / args.scale
    root = out / "physics"
    trainings = plan(runs, args.scale, epochs, args.seeds, root, args.max_events, args.device)
    todo = [t for t in trainings if not finished(t.folder, t.req)]
    same = {r: s for r, s in shared(runs).items() if s != r}
    sharing = "".join(f"; {r} has {s}'s configuration, trained once" for r, s in same.items())
    if args.dry_run:
        for t in trainings:
            print(("# finished, skipped: " if t not in todo else "") + " ".join(t.cmd))
        print(f"# {len(trainings)} trainings ({len(runs)} runs x {args.seeds} seeds{sharing}; "
              f"best: {best}): {len(trainings) - len(todo)} finished, {len(todo)} to run, "
              f"{min(jobs, max(1, len(todo)))} at a time")
        return 0
    if out.exists() and not out.is_dir():
        print(f"error: {out} is not a folder; pass --out a folder", file=sys.stderr)
        return 2
    root.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    choice = {"scale": args.scale, "best": best, "runs": {
        r: {"method": c["method"], "search_seed": c["seed"], "job_id": c["job_id"],
            "final_loss": c["final_loss"], "best_loss": c["best_loss"],
            "overrides": c["overrides"], "epochs": epochs, "seeds": seeds, "eval": EVAL_SPLIT,
            "max_events": args.max_events, **({"trained_as": same[r]} if r in same else {})}
        for r, c in runs.items()}}
    (root / CHOICE_JSON).write_text(json.dumps(choice, indent=1) + "\n")
    print(f"physics: {len(runs)} runs ({', '.join(runs)}; best {best}) x {args.seeds} seeds, "
          f"{epochs} epochs{sharing}: {len(todo)} of {len(trainings)} trainings to run "
          f"({len(trainings) - len(todo)} finished before), {min(jobs, max(1, len(todo)))} at "
          f"a time, one thread each; logs in {root}/<run>/seed<k>/{TRAIN_LOG}", flush=True)
    try:
        failed = run_trainings(todo, jobs)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    written = render(out)
    print(f"wrote {len(written)} files to {out}/")
    if failed:
        print(f"error: {len(failed)} of {len(todo)} trainings failed: "
              f"{', '.join(t.name for t in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
