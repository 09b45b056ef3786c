"""Claim 1 from its raw logs: the references (experiments.claim1) and what tuning gains on them.

    python -m analysis.claim1 --scale small       # or: make claim1 (after the trainings)

Reads ``results/<scale>/claim1/{runs.csv,learning_curves.csv,metadata.json}`` and, when it was
made with the same loss, the learning-curve table ``results/<scale>/lctable.csv`` (``--table``).
Writes ``paper_figures/<scale>/claim1/``:

- ``references.md`` / ``references.csv``: each reference (the hand-set learning rates one row
  each) with n, mean +- SD of the final val_loss and of every component;
- ``improvement.md`` / ``improvement.csv``: each incumbent's improvement over ``default``, over
  the hand-tuned default (the ``default_lr`` with the best mean) and over ``converged``:
  ``1 - mean(incumbent) / mean(reference)`` with a 95 % bootstrap interval over training seeds
  (each side resampled, :data:`N_BOOT` draws, fixed seed). Incumbents: ``paper_best`` (the
  study's own tuned configuration, mapped), and, where the table is on the same loss, the best of
  its replicated configurations by mean final loss (what a random search over them finds; chosen
  and scored on the same seeds, so optimistic), and the incumbents of the searches under
  ``results/<scale>/<method>/seed<k>/`` made with the same loss (over search seeds);
- ``curves.png``: mean validation loss per epoch of each reference, with the seeds' range;
- where ``paper_best`` ranks among the table's configurations.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.logs import loss_name as recorded_loss
from analysis.tables import write_csv
from experiments import logs
from mlpf.paths import FIGURES_DIR, RESULTS_DIR

N_BOOT = 10_000
BOOT_SEED = 20220302  # the preprint's date: a fixed seed, so the outputs do not drift
COMPONENTS = (logs.VAL_LOSS, logs.VAL_LOSS_REG, *logs.VAL_COMPONENTS)


class Claim1Error(Exception):
    """Missing or unusable claim-1 logs (one line, exit 2)."""


def load_runs(folder: Path) -> tuple[pd.DataFrame, dict]:
    """runs.csv (finished, ok trainings; a duplicate key keeps its first row) and metadata."""
    meta = logs.read_json(folder / logs.METADATA_JSON)
    try:
        df = logs.read_checked_csv(folder / "runs.csv", (logs.SEED, "epochs"),
                                   (logs.LR, *COMPONENTS))
    except logs.LogError as e:
        raise Claim1Error(str(e)) from None
    if df is None or meta is None:
        raise Claim1Error(f"{folder}: no claim-1 logs (runs.csv and metadata.json); run "
                          "`make claim1` first")
    df = df[df["status"].astype(str) == logs.STATUS_OK]
    df = df.assign(**{logs.LR: df[logs.LR].map(lambda v: float(f"{float(v):.6g}"))})
    df = df.drop_duplicates(list(logs.CLAIM1_KEY), keep="first")
    bad = df[~np.isfinite(df[logs.VAL_LOSS]) | (df[logs.VAL_LOSS] < 0)]
    if len(bad):
        print(f"warning: {folder / 'runs.csv'}: {len(bad)} rows with a negative or missing "
              "val_loss left out", file=sys.stderr)
        df = df.drop(bad.index)
    return df, meta


def groups(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """{label: final val_loss per seed}: default, default_lr@<lr> each, converged,
    paper_best."""
    out = {}
    for (ref, lr), g in df.groupby([logs.REFERENCE, logs.LR], sort=False):
        label = f"default_lr@{lr:g}" if ref == "default_lr" else str(ref)
        out[label] = g.sort_values(logs.SEED)[logs.VAL_LOSS].to_numpy(float)
    return out


def hand_tuned(g: dict[str, np.ndarray]) -> str | None:
    """The default_lr label with the best mean final loss (the hand-tuned default)."""
    cands = {k: v.mean() for k, v in g.items() if k.startswith("default_lr@") and len(v)}
    return min(cands, key=cands.get) if cands else None


def improvement(inc: np.ndarray, ref: np.ndarray, rng) -> tuple[float, float, float]:
    """1 - mean(inc)/mean(ref) and its 95 % percentile bootstrap interval."""
    point = 1 - inc.mean() / ref.mean()
    a = inc[rng.integers(0, len(inc), (N_BOOT, len(inc)))].mean(1)
    b = ref[rng.integers(0, len(ref), (N_BOOT, len(ref)))].mean(1)
    lo, hi = np.percentile(1 - a / b, [2.5, 97.5])
    return float(point), float(lo), float(hi)


def table_finals(path: Path, loss_name: str) -> pd.DataFrame | None:
    """(config_id, replicate) -> final val_loss of a table made with ``loss_name``; None when
    there is no such table."""
    meta = logs.read_json(path.with_suffix(".json")) if path.with_suffix(".json").is_file() \
        else None
    if meta is None or not path.is_file():
        return None
    if recorded_loss(meta) != loss_name:
        print(f"warning: {path}: made with another loss than the references "
              f"({recorded_loss(meta) or 'unrecorded'}); not compared", file=sys.stderr)
        return None
    try:
        df = logs.read_checked_csv(path, ("config_id", logs.EPOCH), (logs.VAL_LOSS,))
    except logs.LogError as e:
        raise Claim1Error(str(e)) from None
    max_t = int(meta.get("max_t") or df[logs.EPOCH].max())
    if "replicate" not in df.columns:
        df["replicate"] = 0
    d = df[(df[logs.EPOCH] == max_t) & (df["status"].astype(str) == logs.STATUS_OK)]
    d = d[np.isfinite(d[logs.VAL_LOSS]) & (d[logs.VAL_LOSS] >= 0)]
    return d.drop_duplicates(["config_id", "replicate"])[["config_id", "replicate",
                                                          logs.VAL_LOSS]]


SEARCH_METHODS = ("random", "hyperband", "asha", "asha_bo", "asha_gp", "asha_tpe")


def search_incumbents(scale_dir: Path, loss_name: str, max_t: int) -> dict[str, np.ndarray]:
    """{method: the incumbent's final val_loss per search seed} of the searches under
    ``scale_dir/<method>/seed<k>/`` whose metadata.json records ``loss_name``: the lowest
    val_loss of a trial that trained max_t epochs (status ok). Searches of another loss or
    design are left out."""
    out: dict[str, np.ndarray] = {}
    for m in SEARCH_METHODS:
        vals = []
        for d in sorted((scale_dir / m).glob("seed*")):
            try:
                meta = logs.read_json(d / logs.METADATA_JSON)
            except ValueError:
                continue
            if not isinstance(meta, dict) or recorded_loss(meta) != loss_name:
                continue
            try:
                res = logs.read_results(d, warn=lambda _msg: None)
            except logs.LogError:
                continue
            st, ep = "m:" + logs.STATUS, "m:" + logs.EPOCHS
            if res is None or not {st, ep, "objective"} <= set(res.columns):
                continue
            obj = pd.to_numeric(res["objective"], errors="coerce")
            full = res[(res[st].astype(str) == logs.STATUS_OK)
                       & (pd.to_numeric(res[ep], errors="coerce") == max_t) & np.isfinite(obj)]
            if len(full):
                vals.append(float(-obj[full.index].max()))
        if vals:
            out[m] = np.array(vals)
    return out


def fmt(v: float, d: int = 4) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.{d}f}"


def build(scale: str, results: Path = RESULTS_DIR, out: Path = FIGURES_DIR,
          table: Path | None = None) -> list[Path]:
    folder = Path(results) / scale / logs.CLAIM1_DIR
    df, meta = load_runs(folder)
    if df.empty:
        raise Claim1Error(f"{folder / 'runs.csv'}: no finished training yet")
    loss_name = recorded_loss(meta) or "unrecorded"
    dest = Path(out) / scale / "claim1"
    dest.mkdir(parents=True, exist_ok=True)
    g = groups(df)
    ht = hand_tuned(g)

    # references
    rows = []
    for (ref, lr), grp in df.groupby([logs.REFERENCE, logs.LR], sort=False):
        label = f"default_lr@{lr:g}" if ref == "default_lr" else str(ref)
        r = {"reference": label, "lr": lr, "n": len(grp), "epochs": int(grp["epochs"].max())}
        for c in COMPONENTS:
            r[f"{c}_mean"] = float(grp[c].mean())
            r[f"{c}_sd"] = float(grp[c].std(ddof=1)) if len(grp) > 1 else math.nan
        r["cpu_hours"] = float(grp["cpu_seconds"].sum()) / 3600
        rows.append(r)
    refs = pd.DataFrame(rows)
    files = [dest / "references.csv", dest / "references.md"]
    write_csv(refs, files[0])
    comp_cols = [c for c in COMPONENTS if c != logs.VAL_LOSS]
    md = [f"# Claim-1 references at {scale}", "",
          f"Loss: {loss_name}; max_t {meta.get('max_t')}; training seeds per reference: "
          f"{int(refs['n'].min())}-{int(refs['n'].max())}; core-hours "
          f"{refs['cpu_hours'].sum():.2f}. Hand-tuned default: {ht or 'n/a'}.", "",
          "| reference | n | val_loss (mean +- SD) | " + " | ".join(
              c.replace("val_loss_", "") for c in comp_cols) + " |",
          "|---|---|---|" + "---|" * len(comp_cols)]
    for _, r in refs.iterrows():
        md.append(f"| {r['reference']} | {r['n']} | {fmt(r['val_loss_mean'])} +- "
                  f"{fmt(r['val_loss_sd'])} | " + " | ".join(
                      fmt(r[f'{c}_mean'], 4 if c in ('val_loss_reg', 'val_loss_cls',
                                                      'val_loss_charge') else 5)
                      for c in comp_cols) + " |")
    md += ["", "Components are unweighted per-element means (mlpf/loss.py); val_loss = cls + "
           "charge + reg, reg = 100 x (pt + eta + sin_phi + cos_phi + energy)."]

    # incumbents
    incs: dict[str, np.ndarray] = {}
    if "paper_best" in g:
        incs["paper_best"] = g["paper_best"]
    tpath = Path(table) if table else Path(results) / scale / "lctable.csv"
    finals = table_finals(tpath, loss_name)
    rank_line = f"paper_best rank: no table on the loss {loss_name} ({tpath.name})."
    if finals is not None and len(finals):
        per = finals.groupby("config_id")[logs.VAL_LOSS]
        reps = per.count()
        means = per.mean()
        replicated = means[(reps >= 3) & (means.index != 0)]
        if len(replicated):
            best = int(replicated.idxmin())
            incs[f"table_best_of_{len(replicated)}"] = finals[
                finals["config_id"] == best][logs.VAL_LOSS].to_numpy(float)
        if "paper_best" in g:
            r0 = finals[(finals["replicate"] == 0) & (finals["config_id"] != 0)][logs.VAL_LOSS]
            pb = g["paper_best"].mean()
            better = int((r0 < pb).sum())
            if r0.empty:
                rank_line = (f"paper_best rank: no sampled configuration of {tpath.name} has "
                             "finished yet.")
            else:
                rank_line = (f"paper_best (mean {pb:.4f}) ranks {better + 1} of {len(r0) + 1} "
                             f"among the table's {len(r0)} sampled configurations (first "
                             f"training seed): {better / len(r0):.1%} of them are better.")
    for m, v in search_incumbents(Path(results) / scale, loss_name,
                                  int(meta.get("max_t") or 0)).items():
        incs[f"search:{m} (x{len(v)} seeds)"] = v
    rng = np.random.default_rng(BOOT_SEED)
    vs = [("default", "default"), ("hand-tuned default", ht), ("converged", "converged")]
    imp_rows = []
    for inc_name, inc in incs.items():
        for ref_name, key in vs:
            if key is None or key not in g:
                continue
            p, lo, hi = improvement(inc, g[key], rng)
            imp_rows.append({"incumbent": inc_name, "over": ref_name, "reference": key,
                             "improvement": p, "lo95": lo, "hi95": hi,
                             "n_incumbent": len(inc), "n_reference": len(g[key])})
    imp = pd.DataFrame(imp_rows, columns=["incumbent", "over", "reference", "improvement",
                                          "lo95", "hi95", "n_incumbent", "n_reference"])
    files += [dest / "improvement.csv", dest / "improvement.md"]
    write_csv(imp, files[2])
    imd = [f"# Claim 1 at {scale}: improvement of the incumbents", "",
           "1 - mean(incumbent) / mean(reference), final val_loss, 95 % bootstrap interval over "
           f"training seeds ({N_BOOT} draws).", "",
           "| incumbent | over | improvement | 95 % interval | n |", "|---|---|---|---|---|"]
    for _, r in imp.iterrows():
        mark = " *" if r["n_incumbent"] == 1 else ""
        imd.append(f"| {r['incumbent']} | {r['over']} ({r['reference']}) | "
                   f"{r['improvement']:+.1%} | [{r['lo95']:+.1%}, {r['hi95']:+.1%}]{mark} | "
                   f"{r['n_incumbent']} vs {r['n_reference']} |")
    if (imp["n_incumbent"] == 1).any():
        imd += ["", "\\* One incumbent value (one search seed): the interval holds the "
                "reference's seed noise only, not the search's."]
    imd += ["", rank_line]
    files[1].write_text("\n".join(md) + "\n")
    files[3].write_text("\n".join(imd) + "\n")
    files.append(_curves(folder, dest, scale))
    return files


def _curves(folder: Path, dest: Path, scale: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lc = logs.read_checked_csv(folder / logs.LEARNING_CURVES_CSV, (logs.SEED, logs.EPOCH),
                               (logs.LR, logs.VAL_LOSS))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if lc is not None and len(lc):
        lc = lc[np.isfinite(lc[logs.VAL_LOSS]) & (lc[logs.VAL_LOSS] > 0)]
        for (ref, lr), grp in lc.groupby([logs.REFERENCE, logs.LR], sort=False):
            label = f"default_lr {lr:g}" if ref == "default_lr" else f"{ref} (lr {lr:g})"
            s = grp.groupby(logs.EPOCH)[logs.VAL_LOSS]
            m = s.mean()
            ax.plot(m.index, m.values, label=label, lw=1.4,
                    ls="--" if ref == "default_lr" else "-")
            ax.fill_between(m.index, s.min().values, s.max().values, alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (upstream weights)")
    ax.set_title(f"Claim-1 references at {scale}: mean and range over seeds")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = dest / "curves.png"
    fig.savefig(path, dpi=130, metadata={"Software": None})
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.claim1",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", required=True, choices=("smoke", "small", "paper"))
    p.add_argument("--results", default=str(RESULTS_DIR))
    p.add_argument("--out", default=str(FIGURES_DIR))
    p.add_argument("--table", default=None, help="learning-curve table (default "
                   "results/<scale>/lctable.csv)")
    a = p.parse_args(argv)
    try:
        files = build(a.scale, Path(a.results), Path(a.out),
                      Path(a.table) if a.table else None)
    except Claim1Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f in files:
        print(f)
    print(Path(files[3]).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
