"""The scaling study's report: utilisation, decision time and time to target against workers.

    python -m analysis.scaling --scale small
    python -m analysis.scaling --results results/small/scaling --out paper_figures/small/scaling

Reads what ``python -m experiments.scaling`` wrote in ``results/<scale>/scaling/`` (runs.csv,
incumbents.csv, decisions.csv, cost_curve.csv, decision_times.csv/.json, scaling.json) and the
learning-curve table the manifest names, and writes to ``paper_figures/<scale>/scaling/``:

    scaling.csv          one row per paper epoch time x variant x workers: medians over seeds
    scaling.md           the assumptions, that table, where each variant saturates (median
                         utilisation under SATURATION), decentralised against central
    decision_times.csv   the decision times MEASURED on the machine that ran ``measure``
                         (kind "measured") beside the curve the simulations charged ("fitted")
    utilisation.png      utilisation against workers; charged decision seconds per trial
                         against trials so far, measured points marked
    time_to_target.png   hours and booked GPU-hours (workers x hours) to the top-5 % target

Metrics (per search; medians over seeds):
    utilisation      1 - worker time waiting for the manager / (W x the time it stopped
                     dispatching) (experiments.scaling)
    manager busy     the busiest manager's decision seconds / the search's end
    s per trial      charged decision seconds / trials
    target           the GOAL_QUANTILE (top 5 %) quantile of the table's final losses, as in
                     analysis.replay; time to it: the first trial that ends at or below it
    booked GPU-h     W x hours to the target: what an allocation of W GPUs is charged
    manager CPU-h    decision seconds of every manager of the search / 3600
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from analysis.logs import table_final_losses  # noqa: E402
from analysis.replay import GOAL_QUANTILE  # noqa: E402
from mlpf.paths import FIGURES_DIR, RESULTS_DIR, ROOT, shown  # noqa: E402

SATURATION = 0.9  # median utilisation under this: the manager no longer keeps workers busy
# the files and columns experiments.scaling writes (tests/experiments/test_scaling.py checks
# that these are among the columns it writes)
RUNS_CSV, INCUMBENTS_CSV, DECISIONS_CSV = "runs.csv", "incumbents.csv", "decisions.csv"
COST_CURVE_CSV, DECISION_TIMES_CSV = "cost_curve.csv", "decision_times.csv"
DECISION_TIMES_JSON, MANIFEST_JSON = "decision_times.json", "scaling.json"
LOG_WHAT = "results_csv"  # the measured results.csv rewrite (an overhead of every decision)
RUN_COLUMNS = ("epoch_s", "variant", "managers", "workers", "seed", "utilisation",
               "allocation_use", "manager_busy", "decision_s", "decision_max_s", "trials",
               "device_s", "stop_s", "end_s")
INCUMBENT_COLUMNS = ("epoch_s", "variant", "workers", "seed", "t_s", "device_s", "loss")
DECISION_COLUMNS = ("epoch_s", "variant", "workers", "seed", "n_lo", "asked", "seconds")
KEY = ["epoch_s", "variant", "workers"]
COLORS = {"random": "tab:gray", "hyperband": "tab:green", "asha": "tab:blue",
          "asha_bo": "tab:red", "asha_gp": "tab:purple", "asha_tpe": "tab:orange",
          "asha_bo_dec": "black"}
METHOD_OF = {"asha_bo_dec": "asha_bo"}  # a variant's measured decisions: its method's


class ScalingError(Exception):
    """Missing or unusable inputs: one line, exit 2."""


# ----------------------------------------------------------------------------- read
def _read(folder: Path, name: str, columns=()) -> pd.DataFrame:
    path = folder / name
    if not path.is_file():
        raise ScalingError(f"{shown(path)}: missing; run `make scaling` "
                           "(python -m experiments.scaling all)")
    df = pd.read_csv(path)
    missing = set(columns) - set(df.columns)
    if missing:
        raise ScalingError(f"{shown(path)}: no column {sorted(missing)}")
    return df


def target_loss(manifest: dict) -> tuple[float, str]:
    """The top GOAL_QUANTILE target of the table the study ran on, and where it came from."""
    path = Path(manifest["table"])
    path = path if path.is_absolute() else ROOT / path
    final = table_final_losses(path)
    if not len(final):
        raise ScalingError(f"{manifest['table']}: no complete configuration for the target")
    return float(np.quantile(final.to_numpy(float), GOAL_QUANTILE)), \
        f"{manifest['table']}, {len(final)} complete configurations"


# ----------------------------------------------------------------------------- metrics
def per_search(runs: pd.DataFrame, inc: pd.DataFrame, target: float) -> pd.DataFrame:
    """runs.csv with time, device-seconds and booked GPU-hours to the target (inf: never)."""
    hit = inc[inc["loss"] <= target].sort_values("t_s", kind="mergesort")
    first = hit.groupby([*KEY, "seed"], sort=False).head(1).set_index([*KEY, "seed"])
    out = runs.set_index([*KEY, "seed"]).join(
        first[["t_s", "device_s"]].rename(columns={"t_s": "t_target_s",
                                                  "device_s": "device_target_s"}))
    out = out.reset_index()
    out[["t_target_s", "device_target_s"]] = out[["t_target_s", "device_target_s"]].fillna(
        math.inf)
    out["hours_to_target"] = out["t_target_s"] / 3600.0
    out["booked_gpu_h_to_target"] = out["workers"] * out["hours_to_target"]
    out["device_h_to_target"] = out["device_target_s"] / 3600.0
    out["s_per_trial"] = out["decision_s"] / out["trials"].clip(lower=1)
    out["manager_cpu_h"] = out["decision_s"] / 3600.0
    return out


def summarise(ps: pd.DataFrame) -> pd.DataFrame:
    """Medians over seeds per epoch time x variant x workers (utilisation also its minimum)."""
    rows = []
    for (e, v, w), g in ps.groupby(KEY, sort=False):
        med = g.median(numeric_only=True)
        rows.append({"epoch_s": e, "variant": v, "workers": int(w), "seeds": len(g),
                     "managers": int(med["managers"]), "utilisation": med["utilisation"],
                     "utilisation_min": g["utilisation"].min(),
                     "allocation_use": med["allocation_use"],
                     "manager_busy": med["manager_busy"], "s_per_trial": med["s_per_trial"],
                     "decision_max_s": med["decision_max_s"], "trials": med["trials"],
                     "reached": int(np.isfinite(g["t_target_s"]).sum()),
                     "hours_to_target": float(np.median(g["hours_to_target"])),
                     "booked_gpu_h_to_target": float(np.median(g["booked_gpu_h_to_target"])),
                     "device_h_to_target": float(np.median(g["device_h_to_target"])),
                     "manager_cpu_h": med["manager_cpu_h"]})
    return pd.DataFrame(rows)


def saturation(summary: pd.DataFrame) -> pd.DataFrame:
    """Per epoch time and variant: the fewest workers whose median utilisation is under
    SATURATION (NaN: none of those simulated), and the utilisation at the most workers."""
    rows = []
    for (e, v), g in summary.groupby(["epoch_s", "variant"], sort=False):
        g = g.sort_values("workers")
        under = g[g["utilisation"] < SATURATION]
        rows.append({"epoch_s": e, "variant": v,
                     "saturates_at": int(under["workers"].iloc[0]) if len(under) else math.nan,
                     "workers_max": int(g["workers"].iloc[-1]),
                     "utilisation_at_max": float(g["utilisation"].iloc[-1])})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- text
def _f(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "never"
    return f"{x:,.{digits}f}"


def _g(x: float) -> str:
    """Seconds or hours in 3 significant digits."""
    if not np.isfinite(x):
        return "never" if np.isinf(x) else "–"
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"


def report(summary: pd.DataFrame, sat: pd.DataFrame, manifest: dict, measured: dict,
           curve: pd.DataFrame, target: tuple[float, str], measured_max: dict) -> str:
    epochs = sorted(summary["epoch_s"].unique(), reverse=True)
    assumed = manifest.get("assumed_paper_epoch_s")
    m = manifest
    lines = [
        "# Scaling: how many workers one manager keeps busy",
        "",
        "Simulated with `python -m experiments.scaling` on "
        f"`{m['table']}` (its median configuration trains to max_t in "
        f"{m['median_training_table_s']:.1f} s there); every trial's epochs scaled so that "
        f"the median configuration's full training lasts {m['paper_max_t']} paper epochs "
        f"(epoch times: {', '.join(f'{e:g} s' for e in epochs)}; {assumed:g} s is an "
        "ASSUMPTION, the study does not report its epoch time; the other is a 10 times "
        "shorter trial). Budget per search: max("
        f"{m['min_trainings']}, {m['trainings_per_worker']} x workers) median full trainings "
        f"of device time, walltime {m['walltime_factor']:g} x that at full use. "
        f"{len(m['seeds'])} seeds per point (medians). Manager decisions are charged to the "
        "simulated clock from the curve fitted to decision times measured on one machine "
        f"(`decision_times.csv` here, kind `measured`: {measured.get('where', '?')}); model-"
        f"based methods propose with their real model for their first {m['n_steer']} "
        "results, then random configurations at the model's fitted cost. Decentralised "
        f"(`asha_bo_dec`): one CBO replica per node of {m['workers_per_node']} workers, all "
        "on one storage. Target: the top "
        f"{100 * GOAL_QUANTILE:g} % of the table's final losses, {target[0]:.4f} ({target[1]}).",
        "",
        "Utilisation: 1 - worker time spent waiting for the manager / (workers x time until "
        "the search stopped dispatching). Manager busy: the busiest manager's decision time / "
        "the search's duration. s/trial: charged decision seconds per trial. Booked GPU-h: "
        "workers x hours to the target.",
        "",
    ]
    for e in epochs:
        s = summary[summary["epoch_s"] == e]
        lines += [f"## Paper epoch {e:g} s" + (" (assumed)" if e == assumed else ""), "",
                  "| variant | workers | managers | utilisation [min] | manager busy | "
                  "s/trial | trials | reached | h to top 5 % | booked GPU-h | device-h | "
                  "manager CPU-h |",
                  "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for _, r in s.iterrows():
            lines.append(
                f"| {r['variant']} | {r['workers']} | {r['managers']} | "
                f"{r['utilisation']:.3f} [{r['utilisation_min']:.3f}] | "
                f"{r['manager_busy']:.2f} | {_g(r['s_per_trial'])} | {r['trials']:,.0f} | "
                f"{r['reached']}/{r['seeds']} | {_g(r['hours_to_target'])} | "
                f"{_g(r['booked_gpu_h_to_target'])} | {_g(r['device_h_to_target'])} | "
                f"{_g(r['manager_cpu_h'])} |")
        lines.append("")
        st = sat[sat["epoch_s"] == e]
        under = [f"{r['variant']} at {r['saturates_at']:.0f}" for _, r in st.iterrows()
                 if np.isfinite(r["saturates_at"])]
        held = [r["variant"] for _, r in st.iterrows() if not np.isfinite(r["saturates_at"])]
        lines.append(f"**Saturation (median utilisation under {SATURATION:g}):** " +
                     ("; ".join(under) if under else "none") + " workers" * bool(under) +
                     (f". Above {SATURATION:g} up to {int(st['workers_max'].max())} workers: "
                      f"{', '.join(held)}." if held else "."))
        lines += ["", *decentral_lines(s), ""]
    lines += ["## Decision time per trial (fitted curve, k = 1, real seconds)", "",
              "| method | n = 10 | 100 | 1,000 | 10,000 | 100,000 | measured up to n |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for what, g in curve[curve["k"] == 1].groupby("what", sort=False):
        per_n = g.groupby("n")["seconds"].sum()  # tell + ask (or the overhead)
        top = measured_max.get(what, math.inf)
        lines.append(f"| {what} | " + " | ".join(
            _g(per_n.get(n, math.nan)) if n <= top else f"({_g(per_n.get(n, math.nan))})"
            for n in (10, 100, 1000, 10_000, 100_000)) + f" | {top:,.0f} |")
    lines += ["", "Tell + ask of one trial (the methods), and per decision whatever the method: "
              "`results_csv` (the driver rewrites results.csv after every decision) and "
              "`ledger_read` (the device ledger read from the shared storage). In brackets: "
              "beyond the largest measured history, where the curve continues with its last "
              "slope (a GP's cubic fit makes that a rough guess). Measured points: "
              "`decision_times.csv` (kind `measured`); they vary from run to run.", ""]
    return "\n".join(lines)


def decentral_lines(s: pd.DataFrame) -> list[str]:
    """asha_bo_dec against asha_bo at each worker count both ran."""
    c = s[s["variant"] == "asha_bo"].set_index("workers")
    d = s[s["variant"] == "asha_bo_dec"].set_index("workers")
    both = [w for w in c.index if w in d.index and d.loc[w, "managers"] > 1]
    if not both:
        return []
    out = ["**Decentralised (asha_bo_dec) against central asha_bo:**"]
    for w in both:
        a, b = c.loc[w], d.loc[w]
        out.append(f"- {w} workers, {int(b['managers'])} replicas: utilisation "
                   f"{b['utilisation']:.3f} vs {a['utilisation']:.3f}; hours to the target "
                   f"{_g(b['hours_to_target'])} vs {_g(a['hours_to_target'])}; booked GPU-h "
                   f"{_g(b['booked_gpu_h_to_target'])} vs {_g(a['booked_gpu_h_to_target'])}; "
                   f"manager CPU-h {_g(b['manager_cpu_h'])} vs {_g(a['manager_cpu_h'])}.")
    return out


# ----------------------------------------------------------------------------- figures
def _variants(df: pd.DataFrame) -> list[str]:
    return [v for v in COLORS if v in set(df["variant"])] + \
        sorted(set(df["variant"]) - set(COLORS))


def utilisation_figure(summary: pd.DataFrame, dec: pd.DataFrame, measured: pd.DataFrame):
    epochs = sorted(summary["epoch_s"].unique(), reverse=True)
    fig, axes = plt.subplots(2, len(epochs), figsize=(5.2 * len(epochs), 8.0), squeeze=False)
    for j, e in enumerate(epochs):
        ax = axes[0, j]
        s = summary[summary["epoch_s"] == e]
        for v in _variants(s):
            g = s[s["variant"] == v].sort_values("workers")
            ax.errorbar(g["workers"], g["utilisation"],
                        yerr=[g["utilisation"] - g["utilisation_min"], 0 * g["utilisation"]],
                        marker="o", ms=4, lw=1.5, capsize=2, color=COLORS.get(v), label=v,
                        ls="--" if v == "asha_bo_dec" else "-")
        ax.axhline(SATURATION, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.03)
        ax.set_xlabel("simulated workers")
        ax.set_ylabel("utilisation (median, bar: min over seeds)")
        ax.set_title(f"paper epoch {e:g} s")
        if j == 0:
            ax.legend(fontsize=7, loc="lower left")
        ax = axes[1, j]
        d = dec[(dec["epoch_s"] == e) & (dec["workers"] == dec["workers"].max())]
        for v in _variants(d):
            g = d[d["variant"] == v].groupby("n_lo")[["seconds", "asked"]].sum()
            g = g[g["asked"] > 0]
            ax.plot(g.index, g["seconds"] / g["asked"], color=COLORS.get(v), lw=1.5,
                    ls="--" if v == "asha_bo_dec" else "-",
                    label=f"{v} (simulated, {int(d['workers'].max())} workers)")
        for what, g in measured.groupby("what", sort=False):
            v = next((x for x in COLORS if METHOD_OF.get(x, x) == what), None)
            if what == LOG_WHAT:
                ax.plot(g["n"], g["seconds"], ls="none", marker="+", ms=6, color="black",
                        label="results.csv rewrite per decision (measured)")
            elif v is not None:
                ax.plot(g["n"], g["seconds"], ls="none", marker="x", ms=5, color=COLORS[v])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("trials told so far")
        ax.set_ylabel("decision seconds per trial")
        ax.set_title("lines: charged in the simulation; x: measured tell + ask of one trial",
                     fontsize=8)
        if j == 0:
            ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    return fig


def target_figure(summary: pd.DataFrame):
    epochs = sorted(summary["epoch_s"].unique(), reverse=True)
    fig, axes = plt.subplots(2, len(epochs), figsize=(5.2 * len(epochs), 8.0), squeeze=False)
    for j, e in enumerate(epochs):
        s = summary[summary["epoch_s"] == e]
        for i, (col, label) in enumerate((("hours_to_target", "hours to the top-5 % target"),
                                          ("booked_gpu_h_to_target",
                                           "booked GPU-hours to it (workers x hours)"))):
            ax = axes[i, j]
            for v in _variants(s):
                g = s[s["variant"] == v].sort_values("workers")
                y = g[col].where(np.isfinite(g[col]))
                ax.plot(g["workers"], y, marker="o", ms=4, color=COLORS.get(v), label=v,
                        ls="--" if v == "asha_bo_dec" else "-")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("simulated workers")
            ax.set_ylabel(label)
            if i == 0:
                ax.set_title(f"paper epoch {e:g} s")
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.suptitle("median over seeds; a gap: not reached in most seeds", fontsize=9)
    fig.tight_layout()
    return fig


def save_png(fig, out: Path, name: str) -> list[Path]:
    """out/name.png without a software string (reruns give the same bytes); close it."""
    path = out / f"{name}.png"
    fig.savefig(path, dpi=150, metadata={"Software": None})
    plt.close(fig)
    return [path]


# ----------------------------------------------------------------------------- build
def build(results: Path, out: Path) -> list[Path]:
    """Every output of the study from the files in ``results``; returns the paths written."""
    manifest_path = results / MANIFEST_JSON
    if not manifest_path.is_file():
        raise ScalingError(f"{shown(manifest_path)}: missing; run `make scaling`")
    manifest = json.loads(manifest_path.read_text())
    runs = _read(results, RUNS_CSV, RUN_COLUMNS)
    inc = _read(results, INCUMBENTS_CSV, INCUMBENT_COLUMNS)
    dec = _read(results, DECISIONS_CSV, DECISION_COLUMNS)
    curve = _read(results, COST_CURVE_CSV, ("what", "part", "n", "k", "seconds"))
    dt = _read(results, DECISION_TIMES_CSV, ("what", "part", "n", "k", "seconds"))
    info = json.loads((results / DECISION_TIMES_JSON).read_text()) \
        if (results / DECISION_TIMES_JSON).is_file() else {}
    mach = info.get("machine") or {}
    measured_where = {"where": ", ".join(str(x) for x in (
        mach.get("cpu_model"), f"{mach.get('cores_usable', '?')} cores",
        f"load {info['load_average_before'][0]:.1f}" if info.get("load_average_before")
        else None, info.get("measured_utc")) if x)}
    target = target_loss(manifest)
    ps = per_search(runs, inc, target[0])
    summary = summarise(ps)
    sat = saturation(summary)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["epoch_s", "variant", "workers", "seeds", "managers", "utilisation",
            "utilisation_min", "allocation_use", "manager_busy", "s_per_trial",
            "decision_max_s", "trials", "reached", "hours_to_target",
            "booked_gpu_h_to_target", "device_h_to_target", "manager_cpu_h"]
    written = [out / "scaling.csv", out / "scaling.md", out / "decision_times.csv"]
    summary[cols].merge(sat[["epoch_s", "variant", "saturates_at"]], on=["epoch_s", "variant"]
                        ).to_csv(written[0], index=False, float_format="%.6g")
    measured_max = dt[dt["k"] == 1].groupby("what")["n"].max().to_dict()
    written[1].write_text(report(summary, sat, manifest, measured_where, curve, target,
                                 measured_max))
    k1 = dt[dt["k"] == 1].groupby(["what", "n"], sort=False)["seconds"].sum().reset_index()
    both = pd.concat([dt.assign(kind="measured"), curve.assign(kind="fitted")],
                     ignore_index=True)
    both[["kind", "what", "part", "n", "k", "seconds"]].to_csv(written[2], index=False,
                                                               float_format="%.6g")
    written += save_png(utilisation_figure(summary, dec, k1), out, "utilisation")
    written += save_png(target_figure(summary), out, "time_to_target")
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.scaling",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", default="small")
    p.add_argument("--results", default=None, help="default results/<scale>/scaling")
    p.add_argument("--out", default=None, help="default paper_figures/<scale>/scaling")
    a = p.parse_args(argv)
    results = Path(a.results) if a.results else RESULTS_DIR / a.scale / "scaling"
    out = Path(a.out) if a.out else FIGURES_DIR / a.scale / "scaling"
    try:
        written = build(results, out)
    except ScalingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((out / "scaling.md").read_text())
    print(f"wrote {len(written)} files in {shown(out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
