"""How fast is this machine against the one that made the learning-curve table?

    python -m experiments.speed --scale small                    # 8 configurations x 3 epochs
    python -m experiments.speed --scale small --configs 4 --epochs 2 --workers 2
    python -m experiments.speed --scale small --from-logs results/small/   # no training
    make speed SCALE=small

A device-second on a CPU worker is the training process's CPU seconds (mlpf/train.py), steady
under load on one machine (``benchmarks/bench_cpu_seconds.py``) but not across machines: a
search run live on another CPU model than the table's buys another number of epochs with the
same device budget. This command measures the factor. It retrains ``--configs``
configurations of the table (the default and sampled ones spread over the table's range of
epoch costs, chosen from the table alone) for their first ``--epochs`` epochs, with the
table's own overrides and training seed (replicate 0), ``--workers`` at once with one torch
thread each as the table was made, and compares each epoch's CPU seconds with the table's.
The validation losses are compared too: the same digits mean the same computation, so the
ratio is the machines' alone.

Output: ``<out>/<cpu model>-<UTC time>.json`` (default out: ``speed/`` beside the table), one
file per run: the machine, the table (path and sha256), per epoch both CPU seconds and both
losses, and the factor: the median over configurations of (this machine's CPU seconds / the
table's, summed over the epochs), with a 95 % bootstrap interval over configurations.
:func:`factor` pools every run on one CPU model; ``analysis.replay`` uses it to compare live
searches with replays at the same work.

``--from-logs DIR`` trains nothing: it reads the factor off the live searches' own epochs
under DIR, with a cost model of the table (:func:`from_logs`), per CPU model: a second estimate
that includes whatever the search harness adds around a training.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from experiments import logs
from experiments.cli import CliError, Parser, add_scale, add_workers, check_workers, run_main
from experiments.logs import SPEED_DIR, speed_factor, speed_summary
from experiments.provenance import iso, machine_info
from experiments.table import TableError, load_table, table_path

DEFAULT_CONFIGS = 8
DEFAULT_EPOCHS = 3
SAME_LOSS_RTOL = 1e-5  # the table keeps 7 significant digits


summarise, factor = speed_summary, speed_factor  # the run files' schema: experiments.logs


def speed_dir(table: Path) -> Path:
    """Where the runs of ``table`` are kept: ``speed/`` beside it."""
    return Path(table).parent / SPEED_DIR


def slug(cpu_model: str | None) -> str:
    """A CPU model as a file-name part: ``Intel(R) Xeon(R) Processor @ 2.80GHz`` ->
    ``intel-xeon-processor-2-80ghz``."""
    text = re.sub(r"\((r|tm)\)", "", str(cpu_model or "unknown-cpu"), flags=re.I).lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown-cpu"


def pick(table, n: int, epochs: int) -> list:
    """``n`` complete entries of ``table`` with at least ``epochs`` epochs: the default
    (configuration 0) when it has them, and the rest at evenly spaced quantiles of their cost
    over those epochs (ties: lowest id), so cheap and dear configurations are both timed."""
    usable = [e for e in table.entries if len(e.curve) >= epochs]
    if not usable:
        raise ValueError(f"no configuration of the table has {epochs} recorded epochs")
    chosen = [e for e in usable if e.config_id == 0][:1]
    rest = sorted((e for e in usable if e.config_id != 0),
                  key=lambda e: (sum(c[2] for c in e.curve[:epochs]), e.config_id))
    k = min(n - len(chosen), len(rest))
    if k > 0:
        idx = sorted({int(round(i)) for i in np.linspace(0, len(rest) - 1, k)})
        chosen += [rest[i] for i in idx]
    return chosen[:n]


def overrides(table, entries: list) -> dict[int, dict]:
    """{config id: the overrides the table trained it with}: the default's are empty, a sampled
    configuration's are regenerated from the table's sampler and seed (lctable.json) and must
    match its recorded values."""
    from experiments.lctable import sample_configs

    meta = table.meta
    need = max(e.config_id for e in entries)
    if need == 0:
        return {0: {}}
    try:
        configs = sample_configs(table.scale, int(meta.get("n_configs") or need),
                                 int(meta.get("seed") or 0), meta.get("sampler") or "random")
    except (TypeError, ValueError) as e:
        raise ValueError(f"cannot regenerate the table's configurations: {e}") from None
    out = {}
    for e in entries:
        if e.config_id >= len(configs):
            raise ValueError(f"configuration {e.config_id} is beyond the table's "
                             f"{len(configs) - 1} sampled ones")
        c = configs[e.config_id]
        recorded = {k: e.params.get(k) for k in c}
        if logs.native_json(recorded) != logs.native_json(c):
            raise ValueError(f"configuration {e.config_id}: the table's sampler and seed give "
                             "other values than it recorded; not the same configuration")
        out[e.config_id] = c
    return out


def _init(parent: int) -> None:
    import signal

    from experiments.procs import die_with

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool
    die_with(parent)


def _time_one(task: dict) -> dict:
    """Train one configuration for ``epochs`` epochs; its per-epoch CPU and wall seconds."""
    from experiments.trainables import get_trainable

    rows = []

    def on_epoch(m: dict) -> bool:
        rows.append({"epoch": int(m["epoch"]), "val_loss": float(m["val_loss"]),
                     "cpu_seconds": float(m.get(logs.EPOCH_CPU_SECONDS) or math.nan),
                     "wall_seconds": float(m.get("epoch_seconds") or math.nan)})
        return False

    try:
        get_trainable(task["trainable"]).train(
            task["scale"], task["config"], task["epochs"], on_epoch, seed=task["seed"],
            threads=task["threads"])
    except Exception as e:  # noqa: BLE001 - reported with the configuration, not raised
        return {"config_id": task["config_id"], "rows": rows, "error": f"{type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}"}
    return {"config_id": task["config_id"], "rows": rows, "error": None}


def run(table_csv: Path, n_configs: int = DEFAULT_CONFIGS, epochs: int = DEFAULT_EPOCHS,
        workers: int = 2, out: Path | None = None, scale: str | None = None) -> Path:
    """Time the configurations; write and return the run's JSON file."""
    table = load_table(table_csv, scale, warn=lambda msg: None)
    trainable = table.meta.get("trainable") or "mlpf"
    entries = pick(table, n_configs, epochs)
    over = overrides(table, entries)
    seed = int(table.meta.get("seed") or 0)  # replicate 0 trains with the table's seed
    # dearest first, so that both workers stay busy until near the end, as when the table
    # was made (a lone training meets less contention for memory and caches)
    order = sorted(entries, key=lambda e: -sum(c[2] for c in e.curve[:epochs]))
    tasks = [{"config_id": e.config_id, "config": over[e.config_id], "scale": table.scale,
              "trainable": trainable, "epochs": epochs, "seed": seed, "threads": 1}
             for e in order]
    machine = machine_info()
    start = time.time()
    print(f"speed {table.scale}: {len(tasks)} configurations x {epochs} epochs of "
          f"{table_csv.name} on {workers} workers, 1 torch thread each "
          f"({machine.get('cpu_model')})", file=sys.stderr, flush=True)
    ctx = mp.get_context("spawn")  # torch in the workers only
    with ctx.Pool(min(workers, len(tasks)), _init, (os.getpid(),)) as pool:
        done = []
        for res in pool.imap_unordered(_time_one, tasks):
            done.append(res)
            print(f"  configuration {res['config_id']}: {len(res['rows'])} epochs"
                  + (f", failed ({res['error']})" if res["error"] else ""),
                  file=sys.stderr, flush=True)
    by_id = {e.config_id: e for e in entries}
    rows = []
    for res in sorted(done, key=lambda r: r["config_id"]):
        curve = by_id[res["config_id"]].curve
        for r in res["rows"]:
            ref_loss, _, ref_s = curve[r["epoch"] - 1]
            same = math.isclose(r["val_loss"], ref_loss, rel_tol=SAME_LOSS_RTOL)
            rows.append({"config_id": res["config_id"], **r, "table_val_loss": ref_loss,
                         "table_cpu_seconds": ref_s, "same_loss": same})
    result = speed_summary(rows)
    doc = {"scale": table.scale, "table": f"{table_csv.parent.name}/{table_csv.name}",
           "table_sha256": table.sha256, "table_machine": table.meta.get("machine"),
           "table_clock": table.meta.get("clock"), "trainable": trainable, "machine": machine,
           "workers": workers, "threads": 1, "epochs": epochs, "start_iso": iso(start),
           "end_iso": iso(time.time()), "failed": {str(r["config_id"]): r["error"]
                                                   for r in done if r["error"]},
           **result, "rows": rows}
    folder = Path(out) if out else speed_dir(table_csv)
    stamp = datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{slug(machine.get('cpu_model'))}-{stamp}.json"
    folder.mkdir(parents=True, exist_ok=True)
    logs.write_json(path, doc)
    differ = sum(not r["same_loss"] for r in rows)
    print(f"speed {table.scale}: this machine's epochs cost {result['factor']:.3f} "
          f"[{result['low']:.3f}, {result['high']:.3f}] times the table's "
          f"({result['n_configs']} configurations; {differ} of {len(rows)} epochs with another "
          f"loss than the table's) -> {path}", file=sys.stderr)
    return path


def from_logs(table_csv: Path, live_dir: Path, scale: str | None = None, seed: int = 0) -> dict:
    """A second estimate, from the live searches' own epochs (the search harness around them
    included): a cost model of the table (extra trees on the lookup coordinates, the log of
    each configuration's median epoch CPU seconds) predicts each live trial's; per CPU model
    the factor is the median over trials of measured / predicted. The model's 5-fold
    cross-validated median ratio on the table itself is its own bias (1: none).

    Returns {cpu model: {"factor", "n_trials", "n_searches"}} and ``"model_cv_ratio"``."""
    import pandas as pd
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.model_selection import cross_val_predict

    table = load_table(table_csv, scale, warn=lambda msg: None)
    x = np.array([table.features(e.params) for e in table.entries])
    y = np.log([max(1e-9, float(np.median([c[2] for c in e.curve]))) if e.curve else math.nan
                for e in table.entries])
    ok = np.isfinite(y)
    model = ExtraTreesRegressor(n_estimators=200, min_samples_leaf=2, random_state=seed,
                                n_jobs=1)
    cv = cross_val_predict(model, x[ok], y[ok], cv=5)
    model.fit(x[ok], y[ok])
    ratios: dict[str, list[float]] = {}
    searches: dict[str, int] = {}
    for md in sorted(Path(live_dir).glob(f"*/seed*/{logs.METADATA_JSON}")):
        try:
            meta = logs.read_json(md) or {}
            res = pd.read_csv(md.parent / logs.RESULTS_CSV)
            lc = pd.read_csv(md.parent / logs.LEARNING_CURVES_CSV)
            cost = pd.to_numeric(lc[logs.EPOCH_CPU_SECONDS], errors="coerce") \
                .groupby(lc[logs.JOB_ID]).median()
        except (OSError, ValueError, KeyError):
            continue  # not a live search with its logs: nothing to count
        machine = meta.get("machine") if isinstance(meta, dict) else None
        model_name = str(machine.get("cpu_model")) if isinstance(machine, dict) else "unrecorded"
        hp = [c for c in res.columns if c.startswith(logs.HP_PREFIX)]
        if not hp or logs.JOB_ID not in res.columns or meta.get(logs.MD_BACKEND) == "replay":
            continue
        n = 0
        for _, row in res.iterrows():
            measured = cost.get(row[logs.JOB_ID])
            if measured is None or not np.isfinite(measured) or measured <= 0:
                continue
            config = {c[len(logs.HP_PREFIX):]: logs.native(row[c]) for c in hp
                      if not (isinstance(row[c], float) and math.isnan(row[c]))}
            try:
                feat = table.features(config)
            except (KeyError, TypeError, ValueError):
                continue
            if not np.all(np.isfinite(feat)):
                continue
            ratios.setdefault(model_name, []).append(
                float(measured) / math.exp(float(model.predict(feat[None, :])[0])))
            n += 1
        searches[model_name] = searches.get(model_name, 0) + (n > 0)
    return {"model_cv_ratio": float(np.exp(np.median(y[ok] - cv))),
            **{m: {"factor": float(np.median(r)), "n_trials": len(r),
                   "n_searches": searches.get(m, 0)} for m, r in ratios.items()}}


def main(argv=None) -> int:
    p = Parser("python -m experiments.speed", __doc__)
    add_scale(p)
    p.add_argument("--table", default=None,
                   help="learning-curve table (default results/<scale>/lctable.csv)")
    p.add_argument("--configs", type=int, default=DEFAULT_CONFIGS,
                   help=f"configurations to time (default {DEFAULT_CONFIGS})")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"epochs of each, from the first (default {DEFAULT_EPOCHS})")
    add_workers(p, "configurations timed at once, one torch thread each")
    p.add_argument("--out", default=None, help="folder of the runs (default speed/ beside "
                   "the table)")
    p.add_argument("--from-logs", default=None, metavar="DIR",
                   help="train nothing: estimate the factor from the live searches under DIR "
                   "(<method>/seed<k>/) with a cost model of the table, per CPU model")

    def body() -> int:
        a = p.parse_args(argv)
        check_workers(a.workers, allow=a.allow_oversubscribe)
        if a.configs < 1 or a.epochs < 1:
            raise CliError("--configs and --epochs must be >= 1")
        table = Path(a.table) if a.table else table_path(a.scale)
        try:
            if a.from_logs:
                if not Path(a.from_logs).is_dir():
                    raise CliError(f"--from-logs {a.from_logs}: no such folder")
                est = from_logs(table, Path(a.from_logs), a.scale)
                cv = est.pop("model_cv_ratio")
                if not est:
                    raise CliError(f"no live search with its logs under {a.from_logs}")
                for model, e in est.items():
                    print(f"{model}: live epochs cost {e['factor']:.3f} times the table's "
                          f"({e['n_trials']} trials of {e['n_searches']} searches; the cost "
                          f"model's cross-validated ratio on the table {cv:.3f})")
                return 0
            run(table, a.configs, a.epochs, a.workers, Path(a.out) if a.out else None,
                a.scale)
        except (TableError, ValueError) as e:
            raise CliError(str(e)) from None
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
