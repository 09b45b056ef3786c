"""Claim 2, the pre-registered test (analysis/preregistration.md), from per-seed metrics.

    python -m analysis.claim2 --per-seed paper_figures/small/replay_power/per_seed.csv

Reads a ``per_seed.csv`` written by :mod:`analysis.replay` (one row per method and seed:
``dh_to_top5``, ``dh_to_top1`` device-hours to the targets, ``inf`` = never, and ``budget_dh``)
and computes exactly what the pre-registration fixes:

- per BO flavour f present (``asha_bo``, ``asha_gp``, ``asha_tpe``), per other paper method m
  (random search, Hyperband, ASHA) and per target (top 5 %, top 1 %), paired by seed:
  r(s) = log(c_m(s) / c_f(s)), a seed that never reaches the target censored at its budget,
  both censored a tie (r = 0);
- the exact two-sided sign test on the signs of r (ties dropped), Holm-adjusted over the 6
  tests of the flavour; the median of r with a 95 % paired bootstrap interval (10,000 seed
  resamples, fixed RNG seed), reported as the speedup exp(median r);
- the field's baselines (1-Epoch, 4-Epoch, BOHB) where present, by the same statistics, as
  secondary rows: unadjusted p in parentheses, outside the verdict;
- each comparison: faster / slower (adjusted p < 0.05 and the interval above / below 1),
  equivalent (interval inside [1/1.1, 1.1]), else no difference shown; and the verdict per
  flavour: supported / refuted / inconclusive.

- the secondary endpoints (:func:`secondary_endpoints`: compute to the top-10 % target,
  final regret, regret area from ``regret_area.csv`` beside the input), unadjusted, outside
  the verdict;
- a median that a censored seed could move is marked as a bound (:func:`median_bound`).

Writes ``claim2.md``, ``claim2.csv`` and ``claim2_secondary.csv`` next to the input (or to
``--out``) and prints the verdict. Exit 2 with one line when the input is missing or lacks
the columns.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.tables import PerSeedError, read_per_seed, write_csv
from mlpf.paths import shown

FLAVOURS = ("asha_bo", "asha_gp", "asha_tpe")  # ASHA + BO: ours (CBO, extra trees), GP, TPE
OTHERS = ("random", "hyperband", "asha")
# the field's baselines (preregistration.md, secondary endpoints): reported, outside the family;
# BOHB ours and Syne Tune's, PriorBand from NePS (ifBO cannot run here: its weights download)
SECONDARY = ("epoch1", "epoch4", "bohb", "syne_bohb", "neps_priorband")
TARGETS = {"top 5 %": "dh_to_top5", "top 1 %": "dh_to_top1"}
ALPHA = 0.05
EQUIVALENCE = 1.1  # speedups within [1/1.1, 1.1]: equivalent
N_BOOT = 10_000
BOOT_SEED = 20220302
MIN_SEEDS = 200  # the pre-registered number of replay seeds


class Claim2Error(Exception):
    """Unusable input (one line, exit 2)."""


def log_ratios(ref: pd.Series, flav: pd.Series, ref_budget: pd.Series,
               flav_budget: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per seed (aligned by index): r = log(c_ref / c_flavour), never-reached censored at the
    budget, both never = 0; and whether r involves a censored value."""
    r, lower, upper = censored_log_ratios(ref, flav, ref_budget, flav_budget)
    both = ~np.isfinite(ref.to_numpy(float)) & ~np.isfinite(flav.to_numpy(float))
    return r, lower | upper | both


def censored_log_ratios(ref: pd.Series, flav: pd.Series, ref_budget: pd.Series,
                        flav_budget: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`log_ratios`' r, and per seed whether r is a lower bound of the true log ratio
    (only the other method never reached the target: its compute is at least the budget) or
    an upper bound (only the flavour never did). Both never: a tie by definition, exact."""
    a = ref.to_numpy(float)
    b = flav.to_numpy(float)
    ca, cb = ~np.isfinite(a), ~np.isfinite(b)
    a = np.where(ca, ref_budget.to_numpy(float), a)
    b = np.where(cb, flav_budget.to_numpy(float), b)
    with np.errstate(divide="ignore"):
        r = np.log(np.maximum(a, 1e-12) / np.maximum(b, 1e-12))
    r = np.where(ca & cb, 0.0, r)
    return r, ca & ~cb, cb & ~ca


def median_bound(r: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> str:
    """Whether the median of r is exact ("") or, with censored seeds, only a bound: the true
    median lies between the median with every upper bound at -inf and the median with every
    lower bound at +inf. ">" when only the latter differs (the median is a lower bound), "<"
    when only the former does, "~" when both do (censoring could move it either way)."""
    med = float(np.median(r))
    hi = float(np.median(np.where(lower, np.inf, r)))
    lo = float(np.median(np.where(upper, -np.inf, r)))
    return {(False, False): "", (True, False): ">", (False, True): "<",
            (True, True): "~"}[(hi != med, lo != med)]


def sign_test(r: np.ndarray) -> tuple[int, int, float]:
    """(seeds where the flavour is faster, slower, exact two-sided binomial p), ties out."""
    from scipy.stats import binomtest

    pos, neg = int((r > 0).sum()), int((r < 0).sum())
    p = binomtest(pos, pos + neg, 0.5).pvalue if pos + neg else 1.0
    return pos, neg, float(p)


def bootstrap_median(r: np.ndarray, rng) -> tuple[float, float, float]:
    """Median of r and its 95 % percentile interval over seed resamples."""
    idx = rng.integers(0, len(r), (N_BOOT, len(r)))
    meds = np.median(r[idx], axis=1)
    lo, hi = np.percentile(meds, [2.5, 97.5])
    return float(np.median(r)), float(lo), float(hi)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adj, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * pvalues[i])
        adj[i] = min(1.0, running)
    return adj


def outcome(p_adj: float, lo: float, hi: float) -> str:
    """One comparison at one target, by the pre-registered rule (lo, hi: speedup interval)."""
    if p_adj < ALPHA and lo > 1:
        return "faster"
    if p_adj < ALPHA and hi < 1:
        return "slower"
    if 1 / EQUIVALENCE <= lo and hi <= EQUIVALENCE:
        return "equivalent"
    return "no difference shown"


def verdict(rows: pd.DataFrame) -> str:
    """Supported / refuted / inconclusive from one flavour's comparisons."""
    by = {m: set(g["outcome"]) for m, g in rows.groupby("versus")}
    if any("slower" in s for s in by.values()):
        return "refuted"
    if any(rows[rows["versus"] == m]["outcome"].eq("equivalent").all() for m in by):
        return "refuted"
    if len(by) == len(OTHERS) and all("faster" in s for s in by.values()):
        return "supported"
    return "inconclusive"


def analyse(per_seed: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    need = {"method", "seed", "budget_dh", *TARGETS.values()}
    missing = need - set(per_seed.columns)
    if missing:
        raise Claim2Error(f"per-seed metrics lack {', '.join(sorted(missing))}")
    ps = per_seed.copy()
    for c in ("budget_dh", *TARGETS.values()):
        ps[c] = pd.to_numeric(ps[c], errors="coerce")
    ps = ps.drop_duplicates(["method", "seed"])
    rng = np.random.default_rng(BOOT_SEED)
    present = set(ps["method"])
    tested = ps[ps["method"].isin([*FLAVOURS, *OTHERS])]
    for tname, col in TARGETS.items():  # every seed a tie would read as "equivalent"
        if len(tested) and not np.isfinite(tested[col].to_numpy(float)).any():
            raise Claim2Error(f"no seed of any method reached the {tname} target, or the "
                              "replays had none (no table): nothing to test")

    def compare(f: str, fl: pd.DataFrame, m: str) -> list[dict]:
        """Flavour ``f`` (its rows ``fl``) against method ``m``, per target, paired by seed
        (the bootstrap draws continue one RNG stream, in this order)."""
        ref = ps[ps["method"] == m].set_index("seed")
        seeds = fl.index.intersection(ref.index).sort_values()
        out = []
        for tname, col in TARGETS.items():
            r, lower, upper = censored_log_ratios(
                ref.loc[seeds, col], fl.loc[seeds, col], ref.loc[seeds, "budget_dh"],
                fl.loc[seeds, "budget_dh"])
            cens = lower | upper | (~np.isfinite(ref.loc[seeds, col].to_numpy(float))
                                    & ~np.isfinite(fl.loc[seeds, col].to_numpy(float)))
            pos, neg, p = sign_test(r)
            med, lo, hi = bootstrap_median(r, rng)
            out.append({"flavour": f, "versus": m, "target": tname, "seeds": len(seeds),
                        "faster_seeds": pos, "slower_seeds": neg, "ties": len(r) - pos - neg,
                        "censored_seeds": int(cens.sum()), "speedup": math.exp(med),
                        "bound": median_bound(r, lower, upper) if len(r) else "",
                        "lo95": math.exp(lo), "hi95": math.exp(hi), "p_sign": p})
        return out

    rows, verdicts = [], {}
    for f in (f for f in FLAVOURS if f in present):
        fl = ps[ps["method"] == f].set_index("seed")
        mine = [row for m in OTHERS if m in present for row in compare(f, fl, m)]
        for row, pa in zip(mine, holm([x["p_sign"] for x in mine])):
            row["p_holm"] = pa
            row["outcome"] = outcome(pa, row["lo95"], row["hi95"])
        rows += mine
        if mine:
            verdicts[f] = verdict(pd.DataFrame(mine))
        for m in (m for m in SECONDARY if m in present):  # unadjusted, not in the verdict
            for row in compare(f, fl, m):
                row["p_holm"] = math.nan
                row["outcome"] = "secondary (unadjusted): " + outcome(row["p_sign"],
                                                                      row["lo95"], row["hi95"])
                rows.append(row)
    cols = ["flavour", "versus", "target", "seeds", "faster_seeds", "slower_seeds", "ties",
            "censored_seeds", "speedup", "bound", "lo95", "hi95", "p_sign", "p_holm", "outcome"]
    return pd.DataFrame(rows, columns=cols), verdicts


SECONDARY_ENDPOINTS = ("top 10 %", "final regret", "regret area")


def secondary_endpoints(per_seed: pd.DataFrame, areas: pd.DataFrame | None = None
                        ) -> tuple[pd.DataFrame, list[str]]:
    """The pre-registered secondary endpoints, per flavour against each other paper method,
    paired by seed, outside the verdict: compute to the top-10 % target (``dh_to_top10``,
    censored as the primary), final regret (``regret``, per_seed.csv) and regret area
    (``areas``: :func:`analysis.metrics.regret_areas`). Each row: the ratio (method / ASHA +
    BO: speedup, or regret ratio 10^median difference of log10 regret; above 1 favours ASHA +
    BO) with its 95 % paired bootstrap interval, the sign test and the outcome by the primary's
    rule on the unadjusted p. Returns the rows and notes on what was missing."""
    from analysis.metrics import log_regret

    rng = np.random.default_rng(BOOT_SEED + 1)  # its own stream: the primary's is unchanged
    ps = per_seed.drop_duplicates(["method", "seed"]).copy()
    notes, rows = [], []
    present = set(ps["method"])
    have = {"top 10 %": "dh_to_top10" in ps,
            "final regret": {"regret", "incumbent_loss"} <= set(ps),
            "regret area": areas is not None and len(areas) > 0}
    for e, ok in have.items():
        if not ok:
            notes.append(f"{e}: not in the input (rebuild with a current `python -m "
                         "analysis.replay`)")
    logreg = None  # log10 final regret by (method, seed)
    if have["final regret"]:
        inc = pd.to_numeric(ps["incumbent_loss"], errors="coerce")
        l_ref = (inc - pd.to_numeric(ps["regret"], errors="coerce")).dropna()
        if len(l_ref):  # the same L_ref on every row (analysis.metrics.per_seed_metrics)
            logreg = pd.Series(log_regret(inc, float(l_ref.median())),
                               index=pd.MultiIndex.from_frame(ps[["method", "seed"]]))
    if areas is not None and len(areas):
        areas = areas.drop_duplicates(["method", "seed"]).set_index(["method", "seed"])
    for f in (f for f in FLAVOURS if f in present):
        fl = ps[ps["method"] == f].set_index("seed")
        for m in (m for m in OTHERS if m in present):
            ref = ps[ps["method"] == m].set_index("seed")
            seeds = fl.index.intersection(ref.index).sort_values()
            series = []
            if have["top 10 %"]:
                r, lower, upper = censored_log_ratios(
                    pd.to_numeric(ref.loc[seeds, "dh_to_top10"], errors="coerce"),
                    pd.to_numeric(fl.loc[seeds, "dh_to_top10"], errors="coerce"),
                    ref.loc[seeds, "budget_dh"].astype(float),
                    fl.loc[seeds, "budget_dh"].astype(float))
                series.append(("top 10 %", r, median_bound(r, lower, upper), math.e))
            if logreg is not None:
                d = logreg.reindex([(m, k) for k in seeds]).to_numpy(float) - \
                    logreg.reindex([(f, k) for k in seeds]).to_numpy(float)
                series.append(("final regret", d[np.isfinite(d)], "", 10.0))
            if have["regret area"]:
                a = areas["regret_area"].reindex([(m, s) for s in seeds]).to_numpy(float)
                b = areas["regret_area"].reindex([(f, s) for s in seeds]).to_numpy(float)
                d = a - b
                series.append(("regret area", d[np.isfinite(d)], "", 10.0))
            for name, r, bound, base in series:
                if not len(r):
                    continue
                pos, neg, p = sign_test(r)
                med, lo, hi = bootstrap_median(r, rng)
                ratio, lo_r, hi_r = (base ** x for x in (med, lo, hi))
                rows.append({"flavour": f, "versus": m, "endpoint": name, "seeds": len(r),
                             "better_seeds": pos, "worse_seeds": neg, "ties": len(r) - pos - neg,
                             "ratio": ratio, "bound": bound, "lo95": lo_r, "hi95": hi_r,
                             "p_sign": p, "outcome": outcome(p, lo_r, hi_r).replace(
                                 "faster", "better").replace("slower", "worse")})
    cols = ["flavour", "versus", "endpoint", "seeds", "better_seeds", "worse_seeds", "ties",
            "ratio", "bound", "lo95", "hi95", "p_sign", "outcome"]
    return pd.DataFrame(rows, columns=cols), notes


def report(res: pd.DataFrame, verdicts: dict, source: str,
           secondary: pd.DataFrame | None = None, notes: list[str] | None = None) -> str:
    n = int(res["seeds"].min()) if len(res) else 0
    lines = ["# Claim 2, the pre-registered test", "",
             f"Input: `{source}`; paired seeds per comparison: {n}"
             + (f" (fewer than the pre-registered {MIN_SEEDS})" if n < MIN_SEEDS else "") + ".",
             "Speedup of ASHA + BO over the method: exp(median over seeds of log(c_method / "
             "c_ASHA+BO)), c = device-hours to the target, never-reached censored at the "
             "budget; [95 % paired bootstrap]; sign test, Holm over the flavour's 6 tests "
             "(analysis/preregistration.md).", "",
             "| ASHA + BO flavour | versus | target | speedup [95 %] | faster / slower / tied "
             "seeds | censored | p (Holm) | outcome |", "|---|---|---|---|---|---|---|---|"]
    for _, r in res.iterrows():
        p = f"{r['p_holm']:.3g}" if math.isfinite(r["p_holm"]) else f"({r['p_sign']:.3g})"
        bound = r["bound"] if isinstance(r.get("bound"), str) else ""
        lines.append(f"| {r['flavour']} | {r['versus']} | {r['target']} | {bound}"
                     f"{r['speedup']:.2f} [{r['lo95']:.2f}, {r['hi95']:.2f}] | "
                     f"{r['faster_seeds']} / "
                     f"{r['slower_seeds']} / {r['ties']} | {r['censored_seeds']} | "
                     f"{p} | {r['outcome']} |")
    if (res["bound"].astype(str) != "").any() if "bound" in res else False:
        lines += ["", "A speedup marked > or < is a bound: never-reached seeds near the median "
                  "are censored at the budget (the true median is at least / at most that); ~: "
                  "censoring could move it either way."]
    lines += [""] + [f"**Verdict ({f}): {v}.**" for f, v in verdicts.items()]
    if secondary is not None and len(secondary):
        lines += ["", "## Secondary endpoints (reported, not decided on)", "",
                  "Per seed, paired: compute to the top-10 % target (as the primary, censored at "
                  "the budget: the speedup); final regret and regret area (the mean over the "
                  "budget of log10(incumbent - L_ref), `regret_area.csv`): the ratio of the "
                  "method's regret to ASHA + BO's, 10^(median over seeds of the difference in "
                  "log10 regret). Above 1: ASHA + BO ahead. Sign test unadjusted.", "",
                  "| ASHA + BO flavour | versus | endpoint | ratio [95 %] | better / worse / "
                  "tied seeds | p (unadjusted) | outcome |", "|---|---|---|---|---|---|---|"]
        for _, r in secondary.iterrows():
            lines.append(f"| {r['flavour']} | {r['versus']} | {r['endpoint']} | "
                         f"{r['bound']}{r['ratio']:.2f} [{r['lo95']:.2f}, {r['hi95']:.2f}] | "
                         f"{r['better_seeds']} / {r['worse_seeds']} / {r['ties']} | "
                         f"{r['p_sign']:.3g} | {r['outcome']} |")
        if notes:
            lines += [""] + notes
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.claim2",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--per-seed", required=True, help="per_seed.csv of analysis.replay")
    p.add_argument("--out", default=None, help="folder for claim2.md/csv (default: the input's)")
    a = p.parse_args(argv)
    src = Path(a.per_seed)
    try:
        try:
            ps = read_per_seed(src, "make replay-power")
        except PerSeedError as e:
            raise Claim2Error(str(e)) from None
        res, verdicts = analyse(ps)
        if res.empty:
            raise Claim2Error(f"{src}: no ASHA + BO flavour beside the other paper methods")
        areas = None
        if (src.parent / "regret_area.csv").is_file():
            try:
                areas = pd.read_csv(src.parent / "regret_area.csv")
            except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
                raise Claim2Error(f"{src.parent / 'regret_area.csv'}: unreadable "
                                  f"({str(e).splitlines()[0]})") from None
            if not {"method", "seed", "regret_area"} <= set(areas.columns):
                raise Claim2Error(f"{src.parent / 'regret_area.csv'}: lacks method, seed, "
                                  "regret_area")
            areas["regret_area"] = pd.to_numeric(areas["regret_area"], errors="coerce")
        secondary, notes = secondary_endpoints(ps, areas)
    except Claim2Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else src.parent
    out.mkdir(parents=True, exist_ok=True)
    write_csv(res, out / "claim2.csv")
    write_csv(secondary, out / "claim2_secondary.csv")
    text = report(res, verdicts, shown(src), secondary, notes)  # no machine's path in it
    (out / "claim2.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
