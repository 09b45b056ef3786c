"""The physics behind the number: retrain the best configuration and the default one.

    python -m analysis.physics --scale small                  # both, max_t epochs of the scale
    python -m analysis.physics --scale smoke --epochs 2 --method asha
    python -m analysis.physics --scale small --dry-run        # print the trainer commands
    python -m analysis.physics --scale smoke --epochs 1 --max-events 20   # a quick try

The best trial (lowest validation loss of any method, or of --method) is read from the raw
logs; both trainings run through the trainer's CLI in a subprocess,
``python -m mlpf.train --scale S --epochs N --out DIR --set key=value ...``, which writes
metrics.json (per-class efficiency and fake rate, pt and energy resolution) and
learning_curve.csv. Outputs go to <out>/<scale>/physics/{best,default}/, and the comparison
to <out>/<scale>/physics.{md,tex,pdf,png}. `make figures` re-renders that comparison from
the trainer outputs when they exist (:func:`render`); it never trains.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.logs import HP_PREFIX, LogWarning, MissingLogsError, hp_columns, load_scale, tidy
from analysis.tables import best_configs, fmt_value, write_table
from mlpf.paths import FIGURES_DIR, RESULTS_DIR
from mlpf.scales import get_scale

RUNS = ("default", "best")
METRICS_JSON = "metrics.json"  # written by mlpf.train
CURVE_CSV = "learning_curve.csv"  # written by mlpf.train
CHOICE_JSON = "choice.json"  # which trial "best" is, written here


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


def choose_best(scale: str, results: Path, method: str | None = None) -> dict:
    """The incumbent at this scale (of ``method`` if given): the ended trial with the lowest
    final loss (its loss at its last trained epoch), as {method, seed, job_id, final_loss,
    best_loss (the lowest loss of any of its epochs), overrides: {hp: value}}."""
    runs = load_scale(Path(results) / scale)
    trials, _ = tidy(runs)
    best = best_configs(trials)
    if method is not None:
        best = best[best["method"] == method]
    if len(best) == 0:
        raise MissingLogsError(f"no finished trial{' of ' + method if method else ''} "
                               f"under {Path(results) / scale}")
    r = best.sort_values("final_loss", kind="mergesort").iloc[0]
    overrides = {c[len(HP_PREFIX):]: cli_value(r[c]) for c in hp_columns(best)
                 if cli_value(r[c]) != ""}
    return {"method": r["method"], "seed": int(r["seed"]), "job_id": fmt_value(r["job_id"]),
            "final_loss": float(r["final_loss"]), "best_loss": float(r["best_loss"]),
            "overrides": overrides}


def train_command(scale: str, epochs: int, out: Path, overrides: dict[str, str],
                  extra: list[str] = ()) -> list[str]:
    """The trainer's command line; ``extra`` are further trainer flags (e.g. --max-events)."""
    cmd = [sys.executable, "-m", "mlpf.train", "--scale", scale, "--epochs", str(epochs),
           "--out", str(out), *extra]
    if overrides:
        cmd += ["--set", *(f"{k}={v}" for k, v in overrides.items())]
    return cmd


# The trainer's metrics.json: {"final": {epoch metrics}, "mlpf": physics, "reference_pf":
# physics of the rule-based PF candidates}, physics = {"accuracy", "all": {...}, "classes":
# {name: {"efficiency", "fake_rate", "pt": {"resolution"}, "energy": {"resolution"}}}}.
QUANTITIES = (("efficiency", ("efficiency",)), ("fake rate", ("fake_rate",)),
              ("pt resolution", ("pt", "resolution")),
              ("energy resolution", ("energy", "resolution")))


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


def read_run(d: Path) -> tuple[dict, dict, pd.DataFrame | None]:
    """(MLPF headline, rule-based PF headline, learning curve) of one trainer output folder."""
    m = json.loads((Path(d) / METRICS_JSON).read_text())
    mlpf = headline(m["mlpf"]) if "mlpf" in m else headline(m)
    val = _get(m, ("final", "val_loss"))
    if not math.isnan(val):
        mlpf = {("val loss", "final"): val, **mlpf}
    ref = headline(m["reference_pf"]) if "reference_pf" in m else {}
    curve = pd.read_csv(Path(d) / CURVE_CSV) if (Path(d) / CURVE_CSV).exists() else None
    return mlpf, ref, curve


def _f(x: float) -> str:
    return "" if x is None or math.isnan(x) else f"{x:.4g}"


def render(out: Path) -> list[Path]:
    """physics.{md,tex,pdf,png} in ``out`` from out/physics/{default,best}/; [] if the
    trainer outputs are not there (then `make figures` simply has no physics table)."""
    root = Path(out) / "physics"
    if not all((root / r / METRICS_JSON).exists() for r in RUNS):
        return []
    (m_def, _, c_def), (m_best, ref, c_best) = (read_run(root / r) for r in RUNS)
    keys = list(dict.fromkeys([*m_def, *m_best]))
    rows = []
    for k in keys:
        a, b = m_def.get(k, math.nan), m_best.get(k, math.nan)
        rel = 100.0 * (b - a) / abs(a) if a and math.isfinite(a) and math.isfinite(b) else None
        rows.append([k[0], k[1], _f(a), _f(b), "" if rel is None else f"{rel:+.1f}",
                     _f(ref.get(k, math.nan))])
    notes = ["MLPF with the default and with the best configuration, both retrained for the "
             "same epochs (python -m analysis.physics); rule-based PF candidates for reference."]
    choice = root / CHOICE_JSON
    if choice.exists():
        c = json.loads(choice.read_text())
        loss = c.get("final_loss", c["best_loss"])  # older choice.json: best_loss only
        notes.append(f"Best: {c['method']} seed {c['seed']} trial {c['job_id']} (final val "
                     f"loss in the search {loss:.4f}), retrained {c.get('epochs', '?')} epochs"
                     + (f" on {c['max_events']} events per split." if c.get("max_events")
                        else "."))
    write_table(["quantity", "particles", "default", "best", "change %", "rule-based PF"],
                rows, Path(out), "physics", notes)

    import analysis.figures as F  # matplotlib only when there is something to draw

    quantities = list(dict.fromkeys(q for q, _ in keys if q not in ("val loss", "accuracy")))
    fig, axes = F._grid(len(quantities) + 1, sharey=False)
    ax = axes[0]
    for name, curve, col in (("default", c_def, "0.4"), ("best", c_best, "C1")):
        if curve is not None and {"epoch", "val_loss"} <= set(curve.columns):
            ax.plot(curve["epoch"], curve["val_loss"], color=col, label=name)
    ax.set_title("validation loss", fontsize="medium")
    ax.set_xlabel("epoch")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    for ax, q in zip(axes[1:], quantities):
        names = [n for qq, n in keys if qq == q]
        y = np.arange(len(names))
        bars = [("default", m_def, "0.4"), ("best", m_best, "C1"), ("rule-based PF", ref, "C0")]
        for i, (label, m, col) in enumerate(bars):
            ax.barh(y + (i - 1) * 0.27, [m.get((q, n), math.nan) for n in names], 0.27,
                    color=col, label=label)
        ax.set_yticks(y, names, fontsize="x-small")
        ax.invert_yaxis()
        ax.set_title(q, fontsize="medium")
    if len(axes) > 1:
        axes[1].legend(fontsize="x-small")
    return F.save(fig, Path(out), "physics") + [Path(out) / "physics.md",
                                                  Path(out) / "physics.tex"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", required=True)
    ap.add_argument("--results", type=Path, default=RESULTS_DIR)
    ap.add_argument("--out", type=Path, default=FIGURES_DIR)
    ap.add_argument("--epochs", type=int, default=None, help="default: the scale's max_t")
    ap.add_argument("--method", default=None, help="best trial of this method only")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, train nothing")
    ap.add_argument("--max-events", type=int, help="passed to the trainer (quick tries)")
    ap.add_argument("--device", help="passed to the trainer: cpu, cuda, ...")
    args = ap.parse_args(argv)
    for name in ("epochs", "max_events"):
        v = getattr(args, name)
        if v is not None and v < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1, got {v}", file=sys.stderr)
            return 2
    warnings.simplefilter("ignore", LogWarning)  # make_figures reports log problems
    try:
        choice = choose_best(args.scale, args.results, args.method)
    except MissingLogsError as e:
        print(f"error: {e} (run `make benchmark SCALE={args.scale}` first)", file=sys.stderr)
        return 2
    epochs = args.epochs or get_scale(args.scale).max_epochs
    choice["epochs"] = epochs
    choice["max_events"] = args.max_events
    out = Path(args.out) / args.scale
    root = out / "physics"
    # Both trainings at once, each on its share of the cores (one of them alone would leave
    # cores idle: small models do not scale past a few threads). Logs: physics/<run>/train.log.
    threads = max(1, len(os.sched_getaffinity(0)) // len(RUNS))  # cores this process may use
    procs = {}
    for run, overrides in (("default", {}), ("best", choice["overrides"])):
        extra = [f for k, v in (("--max-events", args.max_events), ("--device", args.device),
                                ("--threads", threads)) if v is not None for f in (k, str(v))]
        extra.append("--no-progress")
        cmd = train_command(args.scale, epochs, root / run, overrides, extra)
        print(" ".join(cmd), flush=True)
        if args.dry_run:
            continue
        (root / run).mkdir(parents=True, exist_ok=True)
        with open(root / run / "train.log", "w") as log:
            procs[run] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    if procs:
        print(f"training {' and '.join(procs)} ({threads} threads each); logs in {root}/*/"
              "train.log", flush=True)
    failed = False
    for run, proc in procs.items():
        rc = proc.wait()
        if rc != 0:
            tail = (root / run / "train.log").read_text().strip().splitlines()[-1:]
            print(f"error: training the {run} configuration failed (exit {rc})"
                  + (f": {tail[0]}" if tail else ""), file=sys.stderr)
            failed = True
    if failed:
        return 1
    if args.dry_run:
        return 0
    (root / CHOICE_JSON).write_text(json.dumps(choice, indent=1, sort_keys=True) + "\n")
    written = render(out)
    print(f"wrote {len(written)} files to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
