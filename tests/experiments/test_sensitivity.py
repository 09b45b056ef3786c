"""The claim-2 sensitivity driver (experiments/sensitivity.py) on a hand-made table: which
configurations are left out, the reduced tables, the plan and the campaigns it would run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analysis import claim2
from experiments import campaign, sensitivity
from experiments.table import load_table

from .test_replay import DEFAULT, curve, write_table

N = 101  # sampled configurations: the 1 % quantile of 101 final losses is the 2nd best


@pytest.fixture
def table(tmp_path):
    """Config 0 the default; 1..101 sampled, final losses 0.2 + 0.01 * ((7 i) mod 101) (a
    permutation: config 101 the best, 29 the second); config 102 diverged in epoch 4."""
    cfgs = [(DEFAULT, curve(1.5), 1.0, None)]
    for i in range(1, N + 1):
        cfgs.append(({**DEFAULT, "lr": 1e-4 * (1 + i)}, curve(0.2 + 0.01 * ((7 * i) % N)),
                     1.0, None))
    cfgs.append(({**DEFAULT, "lr": 0.5}, curve(0.1)[:3], 1.0, "diverged"))
    (tmp_path / "t").mkdir()
    return write_table(tmp_path / "t" / "lctable.csv", cfgs)


def test_methods_are_those_the_verdict_reads():
    assert set(sensitivity.METHODS) == {*claim2.OTHERS, *claim2.FLAVOURS}


def test_top_configs_are_the_top_1_percent_of_completed_sampled_ones(table):
    t = load_table(table, "smoke")
    finals = sensitivity.final_losses(t)
    assert 0 not in finals and 102 not in finals and len(finals) == N  # default, failure out
    # (7 i) % 101 == 0 -> none for 1..100, i = 101 -> 0; == 1 -> i = 29
    assert sensitivity.top_configs(t) == [101, 29]
    assert sensitivity.top_configs(t, 0.05)[:2] == [101, 29]


def test_reduced_table_is_the_source_less_one_configurations_rows(table, tmp_path):
    meta = json.loads(table.with_suffix(".json").read_text())  # a finished table, as make claim2's
    table.with_suffix(".json").write_text(json.dumps({**meta, "status": "complete",
                                                      "n_configs": N + 1}))
    dest = sensitivity.write_without(table, 29, tmp_path / "w" / "lctable.csv")
    src_lines = table.read_text().splitlines()
    kept = [ln for ln in src_lines if not ln.startswith("29,")]
    assert dest.read_text().splitlines() == kept  # every other cell as recorded
    meta = json.loads(dest.with_suffix(".json").read_text())
    assert meta["left_out"] == [29] and meta["scale"] == "smoke"
    assert len(meta["derived_from"]["sha256"]) == 64
    warned = []
    t = load_table(dest, "smoke", warn=warned.append)
    assert 29 not in {e.config_id for e in t.entries} and len(t.entries) == N + 1
    assert not [w for w in warned if "truncated" in w], warned  # left out, not lost
    first = t.sha256
    sensitivity.write_without(table, 29, dest)
    assert load_table(dest, "smoke").sha256 == first  # the same bytes every run
    with pytest.raises(Exception, match="no configuration 999"):
        sensitivity.write_without(table, 999, tmp_path / "x.csv")


def test_plan_primary_leave_outs_other_world_and_more_workers(table, tmp_path):
    t = load_table(table, "smoke")
    root = tmp_path / "sens"
    sc = sensitivity.plan(t, root, "nearest", [101, 29])
    assert [s.name for s in sc] == ["primary", "without-101", "without-29",
                                    "world-surrogate", "workers-8"]
    by = {s.name: s for s in sc}
    assert by["primary"].results == (table.parent / "replay").as_posix()  # make claim2's
    assert by["world-surrogate"].lookup == "surrogate"
    assert {s.lookup for s in sc if s.name != "world-surrogate"} == {"nearest"}
    assert by["workers-8"].workers == 8 and by["primary"].workers == 2
    w = by["without-29"]
    assert w.left_out == 29 and w.table == (root / "without-29" / "lctable.csv").as_posix()
    # analysis.replay reads the table in the folder above the replay logs
    assert all(str(s.results).rsplit("/", 1)[0] == s.table.rsplit("/", 1)[0] for s in sc)
    assert [s.name for s in sensitivity.select(sc, "without,workers-8")] == [
        "without-101", "without-29", "workers-8"]


def test_campaign_arguments_parse_with_the_campaign_cli(table, tmp_path):
    t = load_table(table, "smoke")
    for s in sensitivity.plan(t, tmp_path, "nearest", [29]):
        a = campaign.build_parser().parse_args(
            sensitivity.campaign_argv(s, "smoke", [0, 1], 300.0, 2))
        assert (a.backend, a.lookup, a.workers, a.seeds, a.device_budget, a.out) == (
            "replay", s.lookup, s.workers, [0, 1], 300.0, s.results)
        assert a.methods.split() == list(sensitivity.METHODS)


def test_dry_run_writes_the_plan_and_reduced_tables_and_runs_nothing(table, tmp_path,
                                                                      monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: ran.append(cmd))
    root = tmp_path / "sens"
    assert sensitivity.main(["--scale", "smoke", "--table", str(table), "--seeds", "0 1",
                             "--out", str(root), "--dry-run"]) == 0
    assert ran == []
    plan = json.loads((root / sensitivity.MANIFEST).read_text())
    assert plan["top_configs"] == [101, 29] and plan["primary_lookup"] == "nearest"
    assert plan["device_budget_s"] == 300.0  # 32 median trainings of 9 s, rounded up
    assert [s["name"] for s in plan["scenarios"]][:3] == ["primary", "without-101",
                                                          "without-29"]
    assert (root / "without-29" / "lctable.csv").is_file()
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 5 and all("-m experiments.campaign" in ln for ln in out)


def test_runs_one_campaign_per_scenario_and_names_the_failed(table, tmp_path, monkeypatch):
    ran = []

    def run(cmd, **kw):
        ran.append(cmd)
        return subprocess.CompletedProcess(cmd, 1 if "8" == cmd[cmd.index("--workers") + 1]
                                           else 0)

    monkeypatch.setattr(subprocess, "run", run)
    assert sensitivity.main(["--scale", "smoke", "--table", str(table), "--only",
                             "primary,workers", "--out", str(tmp_path / "s")]) == 1
    assert [c[c.index("--workers") + 1] for c in ran] == ["2", "8"]


def test_unusable_table_is_one_line_and_exit_2(tmp_path, capsys):
    assert sensitivity.main(["--scale", "smoke", "--table", str(tmp_path / "no.csv")]) == 2
    pd.DataFrame({"config_id": [0]}).to_csv(tmp_path / "bad.csv", index=False)
    assert sensitivity.main(["--scale", "smoke", "--table", str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err)


def test_searches_that_never_replayed_the_left_out_row_are_derived_exactly(table, tmp_path):
    """A leave-out scenario derived from the primary's searches (those that never replayed
    the configuration left out) and then completed by the campaign holds, byte for byte, the
    logs of the same scenario replayed from scratch; the searches that did replay it differ
    from the primary's, so they could not have been copied."""
    from experiments.logs import LEARNING_CURVES_CSV, METADATA_JSON, RESULTS_CSV

    methods, seeds = ("random", "asha", "hyperband"), list(range(6))
    t = load_table(table, "smoke")
    assert t.rows_set_the_scale == []  # lr and batch_size from the space; activation a category
    primary, without = sensitivity.plan(t, tmp_path / "sens", "nearest", [29])[:2]
    budget = 300.0

    def run(sc, out=None):
        argv = sensitivity.campaign_argv(sc, "smoke", seeds, budget, 1, methods)
        if out is not None:
            argv[argv.index("--out") + 1] = str(out)
        assert campaign.main(argv) == 0

    run(primary)
    reduced = load_table(sensitivity.write_without(table, 29, without.table), "smoke")
    derived, left = sensitivity.derive_unaffected(Path(primary.results), without, reduced,
                                                  methods, seeds)
    assert 0 < derived and 0 < left and derived + left == len(methods) * len(seeds), derived
    run(without)  # replays only the searches left
    scratch = tmp_path / "scratch"
    run(without, scratch)
    touched = 0
    for m in methods:
        for s in seeds:
            a = tmp_path / "sens" / "without-29" / "claim2" / m / f"seed{s}"
            b, p = scratch / m / f"seed{s}", table.parent / "replay" / m / f"seed{s}"
            for name in (RESULTS_CSV, LEARNING_CURVES_CSV):
                assert (a / name).read_bytes() == (b / name).read_bytes(), (m, s, name)
            meta_a, meta_b = (json.loads((d / METADATA_JSON).read_text()) for d in (a, b))
            assert meta_a["replay"]["sha256"] == meta_b["replay"]["sha256"] == reduced.sha256
            if "derived_from" in meta_a["replay"]:
                assert meta_a["replay"]["derived_from"]["left_out"] == 29
            else:
                touched += (p / RESULTS_CSV).read_bytes() != (b / RESULTS_CSV).read_bytes()
    assert touched > 0


def test_nothing_is_derived_outside_the_nearest_world_or_from_unfinished_searches(table,
                                                                                 tmp_path):
    t = load_table(table, "smoke")
    primary, without, world = [s for s in sensitivity.plan(t, tmp_path, "nearest", [29])
                               if s.name in ("primary", "without-29", "world-surrogate")]
    reduced = load_table(sensitivity.write_without(table, 29, without.table), "smoke")
    # no primary logs at all: everything left to replay, nothing written
    assert sensitivity.derive_unaffected(Path(primary.results), without, reduced, ["asha"],
                                         [0, 1]) == (0, 2)
    assert not Path(without.results).exists()
    assert sensitivity.derive_unaffected(Path(primary.results), world, t, ["asha"],
                                         [0]) == (0, 1)
    # a damaged results.csv is no evidence: replayed
    d = Path(primary.results) / "asha" / "seed0"
    d.mkdir(parents=True)
    (d / "metadata.json").write_text(json.dumps({"status": "complete",
                                                 "replay": {"lookup": "nearest"}}))
    (d / "results.csv").write_text("job_id,m:table_config\n0,abc\n")
    (d / "learning_curves.csv").write_text("job_id,epoch\n0,1\n")
    assert sensitivity.replayed_configs(d) is None
    (d / "results.csv").write_text("job_id,m:table_config\n0,3\n")
    assert sensitivity.replayed_configs(d) == {3}
    (d / "learning_curves.csv").write_text("job_id,epoch\n0,1\n1,1\n")  # job 1 not in results
    assert sensitivity.replayed_configs(d) is None
