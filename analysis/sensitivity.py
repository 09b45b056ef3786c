"""Sensitivity of the claim-2 verdict (analysis/preregistration.md, "Sensitivity"): the
pre-registered test of :mod:`analysis.claim2` on every scenario of
:mod:`experiments.sensitivity`, in one table.

    python -m analysis.sensitivity --scale small \\
        --manifest results/small/claim2/sensitivity/scenarios.json --processes 2
    python -m analysis.sensitivity --per-seed primary=paper_figures/small/claim2/per_seed.csv \\
        --per-seed without-17=.../per_seed.csv --out paper_figures/small/claim2_sensitivity

With ``--manifest`` (the plan the replays were run from) each scenario's replay logs go
through :func:`analysis.replay.build` first (its per_seed.csv and figures under
``<out>/<scenario>/``; the targets are the quantiles of that scenario's world; ``--only``
rebuilds the named scenarios alone and reads the others' per_seed.csv as last built there);
with ``--per-seed NAME=PATH`` the per-seed metrics are read as they are. Then, per scenario and
BO flavour, :func:`analysis.claim2.analyse` (sign test, Holm over the flavour's 6 tests,
paired bootstrap) gives the verdict and the 6 pre-registered comparisons (the secondary rows
are left out: they decide nothing).

Writes ``sensitivity.csv`` (one row per scenario, flavour and comparison: scenario, what,
flavour, verdict, same_as_primary, versus, target, seeds, speedup, lo95, hi95, p_holm,
outcome) and ``sensitivity.md`` (one row per scenario and flavour: the verdict and the six
speedups with their intervals and Holm p; then, per flavour, whether the verdict is robust: the
same in every scenario as in ``primary``; with ``--manifest``, Kendall's tau of the method
rankings in the primary and the other world, :func:`world_agreement`). A scenario whose logs
are missing or partial is listed as not run, with the reason (exit 1); no usable scenario at
all: one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from analysis import claim2
from analysis.tables import PerSeedError, read_per_seed, write_csv
from mlpf.scales import SCALES

PRIMARY = "primary"
CSV, MD = "sensitivity.csv", "sensitivity.md"
COLUMNS = ["scenario", "what", "flavour", "verdict", "same_as_primary", "versus", "target",
           "seeds", "speedup", "lo95", "hi95", "p_holm", "outcome"]
NOT_RUN = "not run"


def scenario_rows(name: str, what: str, per_seed: pd.DataFrame) -> pd.DataFrame:
    """The pre-registered comparisons of every flavour in one scenario, with its verdict."""
    res, verdicts = claim2.analyse(per_seed)
    res = res[res["p_holm"].notna()].copy()  # the Holm family: the verdict's rows only
    res.insert(0, "scenario", name)
    res.insert(1, "what", what)
    res.insert(3, "verdict", res["flavour"].map(verdicts))
    return res


def combine(rows: list[pd.DataFrame], missing: dict[str, str] | None = None,
            whats: dict[str, str] | None = None) -> pd.DataFrame:
    """One long table; ``same_as_primary``: the flavour's verdict equals its verdict in the
    primary scenario (empty without a primary); scenarios in ``missing`` get one row each."""
    df = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
    ref = df[df["scenario"] == PRIMARY].groupby("flavour")["verdict"].first().to_dict()
    df["same_as_primary"] = [
        (ref[f] == v) if f in ref else None for f, v in zip(df["flavour"], df["verdict"])]
    for name, why in (missing or {}).items():
        df = pd.concat([df, pd.DataFrame([{
            "scenario": name, "what": (whats or {}).get(name, ""),
            "verdict": f"{NOT_RUN}: {why}"}])], ignore_index=True)
    order = {n: i for i, n in enumerate(whats or [])}  # the plan's order where known
    df = df.sort_values("scenario", key=lambda c: c.map(lambda n: order.get(n, len(order))),
                        kind="stable", ignore_index=True)
    return df.reindex(columns=COLUMNS)


def _cell(r) -> str:
    p = f"{r['p_holm']:.2g}" if math.isfinite(r["p_holm"]) else "-"
    return f"{r['speedup']:.2f} [{r['lo95']:.2f}, {r['hi95']:.2f}], p {p}"


def robustness(df: pd.DataFrame) -> list[str]:
    """Per flavour: robust, or the scenarios whose verdict differs from the primary's."""
    run = df[df["flavour"].notna()]
    if PRIMARY not in set(run["scenario"]):
        return ["No primary scenario: the verdicts are not compared."]
    out = []
    for f, g in run.groupby("flavour", sort=False):
        primary = g[g["scenario"] == PRIMARY]["verdict"].iloc[0]
        per = g.groupby("scenario", sort=False)["verdict"].first()
        changed = [f"{s} ({v})" for s, v in per.items() if v != primary]
        out.append(f"**{f}**: {primary} in the primary scenario; " + (
            f"robust (the same in all {len(per)} scenarios)." if not changed else
            f"not robust: {', '.join(changed)}."))
    n_missing = int(df["flavour"].isna().sum())
    if n_missing:
        out.append(f"{n_missing} scenario(s) not run: robustness holds only over those run.")
    return out


def report(df: pd.DataFrame, source: str) -> str:
    comps = [(m, t) for m in claim2.OTHERS for t in claim2.TARGETS]
    head = ["scenario", "flavour", "verdict", *[f"vs {m}, {t}" for m, t in comps]]
    lines = ["# Claim 2: sensitivity of the verdict", "",
             f"Source: {source}. Per scenario (analysis/preregistration.md, \"Sensitivity\") "
             "and ASHA + BO flavour, the pre-registered test (analysis/claim2.py): speedup "
             "exp(median log(c_method / c_ASHA+BO)) [95 % paired bootstrap], sign-test p "
             "Holm-adjusted over the flavour's 6 tests.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s, gs in df.groupby("scenario", sort=False):
        if gs["flavour"].isna().all():  # not run
            lines.append("| " + " | ".join([s, "-", gs["verdict"].iloc[0],
                                             *["-"] * len(comps)]) + " |")
            continue
        for f, g in gs.groupby("flavour", sort=False):
            by = {(r["versus"], r["target"]): _cell(r) for _, r in g.iterrows()}
            lines.append("| " + " | ".join([s, f, g["verdict"].iloc[0],
                                             *[by.get(c, "-") for c in comps]]) + " |")
    whats = [f"`{s}` {w}" for s, w in df.drop_duplicates("scenario")[["scenario", "what"]]
             .itertuples(index=False) if isinstance(w, str) and w]
    lines += ["", *([f"Scenarios: {'; '.join(whats)}.", ""] if whats else [])]
    lines += robustness(df)
    return "\n".join(lines) + "\n"


def build_scenario(job: tuple) -> str | None:
    """One scenario's replay logs through :func:`analysis.replay.build`; None, or why its
    logs are unusable (one line). ``job``: (scale, results, out, methods, seeds, live): ``live``
    the folder of the live searches its agreement.md compares the replays with."""
    from analysis.replay import ReplayLogsError, build

    scale, results, out, methods, n, live = job
    try:
        build(scale, Path(results), Path(out), methods, n, live=live)
    except (ReplayLogsError, ValueError, OSError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def selected(names: list[str], only: str | None) -> set[str]:
    """``only``: comma-separated scenario names or kinds (``primary``, ``without``, ``world``,
    ``workers``), as ``experiments.sensitivity --only``; None: every name. A name or kind
    that matches no scenario raises :class:`analysis.claim2.Claim2Error`."""
    if not only:
        return set(names)
    want = {w.strip() for w in only.split(",") if w.strip()}
    picked = {n for n in names if n in want or n.split("-")[0] in want}
    unknown = sorted(w for w in want if not any(n == w or n.split("-")[0] == w
                                               for n in names))
    if unknown or not picked:
        raise claim2.Claim2Error(f"--only {only}: no scenario {', '.join(unknown) or only}; "
                                 f"choose from {', '.join(names)}")
    return picked


def from_manifest(path: Path, scale: str, out: Path, processes: int = 1,
                  live: Path | None = None, only: str | None = None
                  ) -> tuple[list, dict, dict]:
    """Each scenario of the plan through analysis.replay (per_seed.csv under
    ``out/<scenario>/``; ``processes`` scenarios at once: each is minutes of single-core
    pandas; ``live``: the live searches each is compared with, default results/<scale>/),
    then claim 2; returns (rows, missing {name: why}, whats). ``only`` (:func:`selected`):
    rebuild those scenarios alone and read the others' per_seed.csv as last built under
    ``out`` (one not built there is listed as not run)."""
    from mlpf.paths import RESULTS_DIR

    plan = json.loads(path.read_text())
    methods, n = tuple(plan["methods"]), len(plan["seeds"])
    live = Path(live) if live is not None else RESULTS_DIR / scale
    build = selected([sc["name"] for sc in plan["scenarios"]], only)
    todo = [sc for sc in plan["scenarios"] if sc["name"] in build]
    jobs = [(scale, sc["results"], out / sc["name"], methods, n, live) for sc in todo]
    if processes > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(min(processes, len(jobs))) as pool:
            built = pool.map(build_scenario, jobs, chunksize=1)
    else:
        built = [build_scenario(j) for j in jobs]
    why = dict(zip((sc["name"] for sc in todo), built))
    rows, missing, whats = [], {}, {}
    for sc in plan["scenarios"]:
        failed = why.get(sc["name"])
        if sc["name"] not in build and not (out / sc["name"] / "per_seed.csv").is_file():
            failed = (f"not built under {out / sc['name']} (rerun without --only to "
                      "build it)")
        whats[sc["name"]] = sc["what"]
        if failed is not None:
            missing[sc["name"]] = failed
            continue
        try:
            ps = read_per_seed(out / sc["name"] / "per_seed.csv", "make claim2-sensitivity")
            rows.append(scenario_rows(sc["name"], sc["what"], ps))
        except (PerSeedError, claim2.Claim2Error) as e:
            missing[sc["name"]] = str(e)
    return rows, missing, whats


def world_agreement(out: Path, names: list[str]) -> list[str]:
    """Do the primary world and the other world (nearest row, surrogate) rank the methods
    alike? Per ``world-*`` scenario among ``names``, Kendall's tau of the per-method medians
    (:func:`analysis.replay.lookup_agreement` on the two summary.csv of ``out/<scenario>/``),
    one line; a line saying why where there is none."""
    from analysis.replay import lookup_agreement

    lines = []
    for name in (n for n in names if n.startswith("world-")):
        try:
            a, b = (pd.read_csv(out / n / "summary.csv") for n in (PRIMARY, name))
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            lines.append(f"Method rankings, {PRIMARY} vs {name}: not compared "
                         f"({type(e).__name__}: no summary.csv of both).")
            continue
        try:
            agree = lookup_agreement(a, b)
        except (KeyError, ValueError, TypeError) as e:  # no method column, text for a number
            lines.append(f"Method rankings, {PRIMARY} vs {name}: not compared (a summary.csv "
                         f"is malformed: {type(e).__name__} {str(e).splitlines()[0][:80]}).")
            continue
        if agree["status"] != "compared":
            lines.append(f"Method rankings, {PRIMARY} vs {name}: {agree['status']}.")
            continue
        cells = [f"{r['metric']} {r['tau']:.2f} ({r['n']} methods; first: {r['best_a']} vs "
                 f"{r['best_b']})" for r in agree["metrics"]]
        lines.append(f"Method rankings, {PRIMARY} vs {name} (Kendall's tau of the medians over "
                     f"seeds): {'; '.join(cells)}.")
    return lines


def live_agreement_lines(out: Path, names: list[str]) -> list[str]:
    """Which world ranks the methods as the live searches do: per world (the primary and each
    ``world-*`` scenario among ``names``), the live-vs-replay Kendall's tau its replay report
    recorded (``out/<scenario>/references.json``, ``live_vs_replay``), one line."""
    lines = []
    for name in (n for n in names if n == PRIMARY or n.startswith("world-")):
        try:
            refs = json.loads((out / name / "references.json").read_text())
        except (OSError, ValueError):
            continue  # a scenario not run: the table above says so
        agree = refs.get("live_vs_replay") if isinstance(refs, dict) else None
        if not isinstance(agree, dict):
            continue
        if agree.get("status") != "compared":
            lines.append(f"Live vs {name}: {agree.get('status', 'not compared')}.")
            continue
        num = {k: (f"{v:.2f}" if isinstance(v := agree.get(k), (int, float))
                   and math.isfinite(v) else "-")
               for k in ("kendall_tau_target", "p_value_target", "kendall_tau", "p_value")}
        q = agree.get("target_quantile")
        top = f"top {100 * q:g} %" if isinstance(q, (int, float)) else "target"
        line = (f"Live vs {name} (Kendall's tau of the method rankings over "
                f"{agree.get('n_methods', '?')} methods, medians over the live seeds): "
                f"{num['kendall_tau_target']} by device-hours to the {top} "
                f"(p {num['p_value_target']}), {num['kendall_tau']} by final loss "
                f"(p {num['p_value']})")
        speed = agree.get("speed")
        f = speed.get("factor") if isinstance(speed, dict) else None
        if isinstance(f, (int, float)) and math.isfinite(f):
            m = {k: (f"{v:.2f}" if isinstance(v := speed.get(k), (int, float))
                     and math.isfinite(v) else "-") for k in ("kendall_tau_target",
                                                              "kendall_tau")}
            line += (f"; at the same work (live CPU seconds / {f:.2f}, not pre-registered): "
                     f"{m['kendall_tau_target']} and {m['kendall_tau']}")
        lines.append(line + ".")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.sensitivity",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="small", choices=tuple(SCALES),
                    help="smoke | small | paper (with --manifest)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", type=Path, help="scenarios.json of experiments.sensitivity")
    src.add_argument("--per-seed", action="append", metavar="NAME=PATH",
                     help="a scenario's per_seed.csv (analysis.replay); repeat per scenario")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default paper_figures/<scale>/claim2_sensitivity)")
    ap.add_argument("--live", type=Path, default=None,
                    help="with --manifest: the live searches each scenario's agreement.md "
                    "compares with (default results/<scale>/)")
    ap.add_argument("--processes", type=int, default=1,
                    help="with --manifest: scenarios analysed at once (default 1)")
    ap.add_argument("--only", default=None,
                    help="with --manifest: comma-separated scenarios or kinds (primary, "
                    "without, world, workers) to rebuild; the others' per_seed.csv are read "
                    "as last built under --out (default: rebuild all)")
    a = ap.parse_args(argv)
    if a.processes < 1:
        print(f"error: --processes {a.processes}: want 1 or more", file=sys.stderr)
        return 2
    if a.out is None:
        from mlpf.paths import FIGURES_DIR

        a.out = FIGURES_DIR / a.scale / "claim2_sensitivity"
    try:
        if a.manifest is not None:
            if not a.manifest.is_file():
                raise claim2.Claim2Error(f"{a.manifest}: no plan; run `make claim2-sensitivity`"
                                         " (python -m experiments.sensitivity) first")
            rows, missing, whats = from_manifest(a.manifest, a.scale, a.out, a.processes,
                                                 a.live, a.only)
            source = f"`{a.manifest.as_posix()}`"
        else:
            if a.only is not None:
                raise claim2.Claim2Error("--only needs --manifest")
            rows, missing, whats = [], {}, {}
            for item in a.per_seed:
                name, sep, path = item.partition("=")
                if not sep or not name or not Path(path).is_file():
                    raise claim2.Claim2Error(f"--per-seed {item}: want NAME=PATH to a file")
                rows.append(scenario_rows(name, "", pd.read_csv(path)))
            source = "per-seed metrics " + ", ".join(f"`{p}`" for p in a.per_seed)
        rows = [r for r in rows if len(r)]
        if not rows:
            raise claim2.Claim2Error("no scenario with an ASHA + BO flavour beside the other "
                                     "paper methods" + (f" ({len(missing)} not run)"
                                                        if missing else ""))
    except claim2.Claim2Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    df = combine(rows, missing, whats)
    a.out.mkdir(parents=True, exist_ok=True)
    write_csv(df, a.out / CSV)
    text = report(df, source)
    if a.manifest is not None:
        agree = world_agreement(a.out, list(whats)) + live_agreement_lines(a.out, list(whats))
        text += ("\n" + "\n".join(agree) + "\n") if agree else ""
    (a.out / MD).write_text(text)
    print(text)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
