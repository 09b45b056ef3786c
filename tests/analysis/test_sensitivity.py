"""The claim-2 sensitivity table (analysis/sensitivity.py) on per-seed metrics made up here."""

from __future__ import annotations

import json
import math

import pandas as pd

from analysis import replay, sensitivity
from mlpf.paths import RESULTS_DIR
from tests.analysis.fakelogs import per_seed_metrics


def per_seed(factor: dict[str, float], n=60, seed=0) -> pd.DataFrame:
    return per_seed_metrics(factor, n, seed)


FAST = {"asha_bo": 0.5, "random": 1, "hyperband": 1, "asha": 1}  # supported
SLOW = {"asha_bo": 1, "random": 2, "hyperband": 2, "asha": 0.5}  # refuted (slower than asha)


def test_one_row_per_comparison_and_the_verdict_compared_with_the_primary(tmp_path, capsys):
    args = []
    for name, factor in [("primary", FAST), ("without-7", FAST), ("workers-8", SLOW)]:
        path = tmp_path / f"{name}.csv"
        per_seed(factor).to_csv(path, index=False)
        args += ["--per-seed", f"{name}={path}"]
    assert sensitivity.main([*args, "--out", str(tmp_path / "out")]) == 0
    df = pd.read_csv(tmp_path / "out" / sensitivity.CSV)
    assert list(df.columns) == sensitivity.COLUMNS
    assert len(df) == 3 * 6  # scenarios x (3 methods x 2 targets); no secondary rows
    assert df["p_holm"].notna().all()
    verdict = df.groupby("scenario")["verdict"].first()
    assert verdict.to_dict() == {"primary": "supported", "without-7": "supported",
                                 "workers-8": "refuted"}
    same = df.groupby("scenario")["same_as_primary"].first()
    assert same.to_dict() == {"primary": True, "without-7": True, "workers-8": False}
    md = (tmp_path / "out" / sensitivity.MD).read_text()
    assert md in capsys.readouterr().out  # printed as written
    assert "| workers-8 | asha_bo | refuted |" in md
    assert "**asha_bo**: supported in the primary scenario; not robust: workers-8 (refuted)." \
        in md
    # the cells are the claim-2 numbers: speedup [interval], Holm p
    r = df[(df["scenario"] == "primary") & (df["versus"] == "random")].iloc[0]
    assert f"{r['speedup']:.2f} [{r['lo95']:.2f}, {r['hi95']:.2f}], p {r['p_holm']:.2g}" in md


def test_the_same_verdict_everywhere_is_robust():
    rows = [sensitivity.scenario_rows(n, "", per_seed(FAST, seed=i))
            for i, n in enumerate(["primary", "world-surrogate"])]
    df = sensitivity.combine(rows)
    assert sensitivity.robustness(df) == [
        "**asha_bo**: supported in the primary scenario; robust (the same in all 2 scenarios)."]


def test_manifest_runs_replay_analysis_per_scenario_and_lists_the_missing(tmp_path,
                                                                         monkeypatch):
    plan = {"methods": ["random", "hyperband", "asha", "asha_bo"], "seeds": list(range(60)),
            "scenarios": [{"name": n, "what": f"what {n}", "results": str(tmp_path / n)}
                          for n in ("primary", "without-3", "workers-8", "world-surrogate")]}
    (tmp_path / "scenarios.json").write_text(json.dumps(plan))
    seen = []

    def build(scale, results, out, required, min_seeds, live=None):  # replay.build's stand-in
        seen.append((scale, results.name, tuple(required), min_seeds, live))
        if results.name == "workers-8":
            raise replay.ReplayLogsError("no replay logs under workers-8")
        out.mkdir(parents=True)
        ps = per_seed(FAST if results.name == "primary" else SLOW)
        if results.name == "world-surrogate":  # replays without targets: nothing to test
            ps = ps.assign(dh_to_top5=math.nan, dh_to_top1=math.nan)
        ps.to_csv(out / "per_seed.csv", index=False)
        return []

    monkeypatch.setattr(replay, "build", build)
    out = tmp_path / "out"
    assert sensitivity.main(["--manifest", str(tmp_path / "scenarios.json"), "--scale",
                             "smoke", "--out", str(out)]) == 1  # one scenario not run
    assert seen[0] == ("smoke", "primary", tuple(plan["methods"]), 60,
                       RESULTS_DIR / "smoke") and len(seen) == 4
    df = pd.read_csv(out / sensitivity.CSV)
    assert df[df["scenario"] == "workers-8"]["verdict"].tolist() == [
        "not run: no replay logs under workers-8"]
    md = (out / sensitivity.MD).read_text()
    assert df[df["scenario"] == "world-surrogate"]["verdict"].str.startswith(
        "not run: no seed of any method reached the top 5 % target").tolist() == [True]
    assert "not robust: without-3 (refuted)" in md and "2 scenario(s) not run" in md
    assert "`without-3` what without-3" in md
    # scenarios analysed in 2 processes (forked: the stand-in too) give the same files
    out2 = tmp_path / "out2"
    assert sensitivity.main(["--manifest", str(tmp_path / "scenarios.json"), "--scale",
                             "smoke", "--out", str(out2), "--processes", "2"]) == 1
    for name in (sensitivity.CSV, sensitivity.MD):
        assert (out2 / name).read_text() == (out / name).read_text()
    assert sensitivity.main(["--manifest", str(tmp_path / "scenarios.json"),
                             "--processes", "0"]) == 2


def test_only_rebuilds_the_named_scenarios_and_reads_the_others_as_built(tmp_path,
                                                                          monkeypatch, capsys):
    plan = {"methods": ["random", "hyperband", "asha", "asha_bo"], "seeds": list(range(60)),
            "scenarios": [{"name": n, "what": f"what {n}", "results": str(tmp_path / n)}
                          for n in ("primary", "without-3", "workers-8")]}
    (tmp_path / "scenarios.json").write_text(json.dumps(plan))
    seen, ready = [], {"primary", "without-3"}

    def build(scale, results, out, required, min_seeds, live=None):
        seen.append(results.name)
        if results.name not in ready:
            raise replay.ReplayLogsError(f"no replay logs under {results.name}")
        out.mkdir(parents=True, exist_ok=True)
        per_seed(FAST if results.name == "primary" else SLOW).to_csv(out / "per_seed.csv",
                                                                     index=False)
        return []

    monkeypatch.setattr(replay, "build", build)
    args = ["--manifest", str(tmp_path / "scenarios.json"), "--scale", "smoke"]
    part = tmp_path / "part"
    assert sensitivity.main(args + ["--out", str(part)]) == 1  # workers-8 not run yet
    ready.add("workers-8")
    seen.clear()
    assert sensitivity.main(args + ["--out", str(part), "--only", "workers"]) == 0
    assert seen == ["workers-8"]  # the others are read as built
    full = tmp_path / "full"
    assert sensitivity.main(args + ["--out", str(full)]) == 0
    for name in (sensitivity.CSV, sensitivity.MD):
        assert (part / name).read_text() == (full / name).read_text()
    # a scenario never built under --out is not run, and says how to build it
    assert sensitivity.main(args + ["--out", str(tmp_path / "new"), "--only", "primary"]) == 1
    df = pd.read_csv(tmp_path / "new" / sensitivity.CSV)
    assert df[df["scenario"] == "workers-8"]["verdict"].str.contains(
        "rerun without --only").tolist() == [True]
    capsys.readouterr()
    for bad in (["--only", "nosuch"], ["--only", "workers,nosuch"]):
        assert sensitivity.main(args + ["--out", str(part), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --only") and "nosuch" in err and "\n" not in err
    assert sensitivity.main(["--per-seed", f"primary={full / 'primary' / 'per_seed.csv'}",
                             "--only", "primary", "--out", str(tmp_path / "p")]) == 2


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert sensitivity.main(["--manifest", str(tmp_path / "nope.json")]) == 2
    assert sensitivity.main(["--per-seed", f"x={tmp_path / 'nope.csv'}"]) == 2
    (tmp_path / "x.csv").write_text("method,seed\nasha_bo,0\n")
    assert sensitivity.main(["--per-seed", f"x={tmp_path / 'x.csv'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("error: ") for e in err)


def test_the_two_worlds_rank_the_methods_by_kendalls_tau(tmp_path):
    """The other world's ranking beside the primary's: tau 1 when the medians keep their
    order, -1 when it is reversed, and a line saying why when a summary is missing."""
    methods = ["random", "hyperband", "asha", "asha_bo"]
    loss = [0.4, 0.3, 0.2, 0.1]
    for name, values in (("primary", loss), ("world-surrogate", loss[::-1])):
        (tmp_path / name).mkdir()
        pd.DataFrame({"method": methods, "incumbent_loss": values,
                      "dh_to_top5": [2 * v for v in loss]}).to_csv(
            tmp_path / name / "summary.csv", index=False)
    lines = sensitivity.world_agreement(tmp_path, ["primary", "without-3", "world-surrogate"])
    assert len(lines) == 1 and lines[0].startswith(
        "Method rankings, primary vs world-surrogate (Kendall's tau of the medians over seeds)")
    assert "final loss -1.00 (4 methods; first: asha_bo vs random)" in lines[0]
    assert "device-h to top 5 % 1.00 (4 methods; first: asha_bo vs asha_bo)" in lines[0]
    assert sensitivity.world_agreement(tmp_path, ["primary", "world-nearest"]) == [
        "Method rankings, primary vs world-nearest: not compared (FileNotFoundError: no "
        "summary.csv of both)."]
    # a malformed summary (no method column) is one line, not a traceback
    (tmp_path / "world-nearest").mkdir()
    (tmp_path / "world-nearest" / "summary.csv").write_text("name,incumbent_loss\nasha,0.2\n")
    (line,) = sensitivity.world_agreement(tmp_path, ["primary", "world-nearest"])
    assert line.startswith("Method rankings, primary vs world-nearest: not compared (a "
                           "summary.csv is malformed: KeyError")


def test_live_searches_against_each_world(tmp_path):
    """Per world, the live-vs-replay tau its replay report recorded, one line; a world without
    a comparison says why; a scenario that is not a world, or not run, adds nothing."""
    def refs(name, agree):
        (tmp_path / name).mkdir()
        (tmp_path / name / "references.json").write_text(json.dumps({"live_vs_replay": agree}))

    refs("primary", {"status": "compared", "n_methods": 6, "target_quantile": 0.05,
                     "kendall_tau_target": 0.6, "p_value_target": 0.09, "kendall_tau": 1.0,
                     "p_value": None})
    refs("world-surrogate", {"status": "no live logs under small/"})
    refs("world-nearest", {"status": "compared", "n_methods": 6, "target_quantile": 0.05,
                           "kendall_tau_target": 0.2, "p_value_target": 0.7, "kendall_tau": 0.4,
                           "p_value": 0.3, "speed": {"factor": 1.953, "kendall_tau_target": 0.6,
                                                     "kendall_tau": math.nan}})
    refs("without-3", {"status": "compared", "kendall_tau": 0.2})
    (tmp_path / "world-broken").mkdir()
    (tmp_path / "world-broken" / "references.json").write_text("{not json")
    lines = sensitivity.live_agreement_lines(
        tmp_path, ["primary", "without-3", "world-surrogate", "world-broken", "world-none",
                   "world-nearest"])
    assert lines == [
        "Live vs primary (Kendall's tau of the method rankings over 6 methods, medians over "
        "the live seeds): 0.60 by device-hours to the top 5 % (p 0.09), 1.00 by final loss "
        "(p -).",
        "Live vs world-surrogate: no live logs under small/.",
        "Live vs world-nearest (Kendall's tau of the method rankings over 6 methods, medians "
        "over the live seeds): 0.20 by device-hours to the top 5 % (p 0.70), 0.40 by final "
        "loss (p 0.30); at the same work (live CPU seconds / 1.95, not pre-registered): 0.60 "
        "and -."]
