"""experiments.speed: timing this machine against the learning-curve table's."""

import json
import math
import shutil

import pytest

from experiments import speed
from experiments.table import load_table

from .conftest import synthetic_lctable


def _rows(ratios: dict[int, float]) -> list[dict]:
    """Two epochs per configuration, this machine ``ratio`` x the table's CPU seconds."""
    return [{"config_id": c, "epoch": e, "cpu_seconds": r * t, "table_cpu_seconds": t,
             "same_loss": True} for c, r in ratios.items() for e, t in ((1, 2.0), (2, 1.0))]


def test_slug_of_cpu_models():
    assert speed.slug("Intel(R) Xeon(R) Processor @ 2.80GHz") == "intel-xeon-processor-2-80ghz"
    assert speed.slug("AMD EPYC") == "amd-epyc"
    assert speed.slug(None) == "unknown-cpu" and speed.slug("(R)") == "unknown-cpu"


def test_summarise_is_the_median_over_configurations():
    s = speed.summarise(_rows({0: 1.5, 1: 2.0, 2: 4.0}))
    assert s["factor"] == pytest.approx(2.0) and s["n_configs"] == 3
    assert s["low"] <= 2.0 <= s["high"] and s["low"] >= 1.5 and s["high"] <= 4.0
    assert s["per_config"] == {"0": 1.5, "1": 2.0, "2": 4.0}
    # an epoch without a usable table time is left out, not a division by zero
    bad = [{"config_id": 5, "cpu_seconds": 1.0, "table_cpu_seconds": 0.0},
           {"config_id": 5, "cpu_seconds": math.nan, "table_cpu_seconds": 1.0},
           {"config_id": 5, "cpu_seconds": "fast", "table_cpu_seconds": 1.0},
           {"config_id": "x", "cpu_seconds": 1.0, "table_cpu_seconds": 1.0},
           {"config_id": 6, "cpu_seconds": -1.0, "table_cpu_seconds": 1.0},
           {"config_id": 7, "table_cpu_seconds": 1.0}]
    assert speed.summarise(bad)["n_configs"] == 0
    assert math.isnan(speed.summarise(bad)["factor"])


def _doc(cpu, sha, ratios):
    return {"machine": {"cpu_model": cpu}, "table_sha256": sha, "rows": _rows(ratios)}


def test_factor_pools_the_runs_of_one_cpu_model_on_one_table(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_doc("CPU A", "t1", {0: 2.0, 1: 2.2})))
    (tmp_path / "b.json").write_text(json.dumps(_doc("CPU A", "t1", {0: 1.8})))
    (tmp_path / "c.json").write_text(json.dumps(_doc("CPU B", "t1", {0: 9.0})))
    (tmp_path / "d.json").write_text(json.dumps(_doc("CPU A", "t2", {0: 9.0})))
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "odd.json").write_text(json.dumps({"machine": ["CPU A"], "rows": []}))
    f = speed.factor(tmp_path, "CPU A", "t1")
    # configuration 0 timed twice counts twice: ratios 2.0, 2.2, 1.8
    assert f["factor"] == pytest.approx(2.0) and f["n_configs"] == 3
    assert f["runs"] == ["a.json", "b.json"] and f["epochs"] == 6 and f["same_loss"] == 6
    assert speed.factor(tmp_path, "CPU B", "t1")["factor"] == pytest.approx(9.0)
    assert speed.factor(tmp_path, "CPU C", "t1") is None
    assert speed.factor(tmp_path / "none", "CPU A", "t1") is None


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return synthetic_lctable(tmp_path_factory.mktemp("speed"), 6, (1, 1, 0))


def test_pick_spreads_over_the_costs_and_keeps_the_default(table):
    t = load_table(table)
    chosen = speed.pick(t, 3, 2)
    assert chosen[0].config_id == 0 and len(chosen) == 3
    cost = {e.config_id: sum(c[2] for c in e.curve[:2]) for e in t.entries if e.config_id}
    ids = sorted(cost, key=lambda c: (cost[c], c))
    assert [e.config_id for e in chosen[1:]] == [ids[0], ids[-1]]  # the cheapest and dearest
    assert len(speed.pick(t, 50, 2)) == len(t.entries)
    with pytest.raises(ValueError, match="no configuration of the table has 99"):
        speed.pick(t, 3, 99)


def test_a_run_retrains_the_tables_configurations_exactly(table, tmp_path, monkeypatch):
    monkeypatch.setenv("EXP_SYNTHETIC", json.dumps({}))
    path = speed.run(table, n_configs=3, epochs=2, workers=1, out=tmp_path)
    doc = json.loads(path.read_text())
    assert path.parent == tmp_path and path.name.startswith(speed.slug(
        doc["machine"]["cpu_model"]))
    assert doc["table_sha256"] == load_table(table).sha256 and doc["epochs"] == 2
    assert len(doc["rows"]) == 6 and not doc["failed"]
    # the same overrides and seed: the synthetic losses match the table's digits
    assert all(r["same_loss"] for r in doc["rows"])
    assert speed.factor(tmp_path, doc["machine"]["cpu_model"], doc["table_sha256"]) is not None


def test_overrides_refuse_a_table_whose_sampler_gives_other_values(table, tmp_path):
    t = load_table(table)
    t.meta = {**t.meta, "seed": 12345}
    with pytest.raises(ValueError, match="not the same configuration"):
        speed.overrides(t, speed.pick(t, 3, 2))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert speed.main(["--scale", "smoke", "--table", str(tmp_path / "no.csv")]) == 2
    assert "no learning-curve table" in capsys.readouterr().err
    assert speed.main(["--scale", "smoke", "--configs", "0"]) == 2
    assert "--configs and --epochs must be >= 1" in capsys.readouterr().err


def test_from_logs_reads_the_factor_off_live_epochs(tmp_path):
    """Live trials of the table's own configurations whose epochs cost twice the table's:
    the cost model of the table (epoch seconds grow with the graph layers) gives about 2,
    per CPU model; a replay log and a folder without logs are not counted."""
    import pandas as pd

    from .conftest import tiny_table

    table = tiny_table(tmp_path / "t" / "lc.csv", n_configs=40, failed=0)
    t = load_table(table)
    for k, (model, factor) in enumerate((("CPU A", 2.0), ("CPU A", 2.0), ("CPU B", 3.0))):
        d = tmp_path / "live" / "random" / f"seed{k}"
        d.mkdir(parents=True)
        entries = t.entries[1 + 10 * k:11 + 10 * k]
        pd.DataFrame([{**{f"p:{n}": v for n, v in e.params.items()}, "job_id": j}
                      for j, e in enumerate(entries)]).to_csv(d / "results.csv", index=False)
        pd.DataFrame([{"job_id": j, "epoch": i + 1, "epoch_cpu_seconds": factor * c[2]}
                      for j, e in enumerate(entries) for i, c in enumerate(e.curve)]
                     ).to_csv(d / "learning_curves.csv", index=False)
        (d / "metadata.json").write_text(json.dumps({"machine": {"cpu_model": model}}))
    replayed = tmp_path / "live" / "asha" / "seed0"
    shutil.copytree(tmp_path / "live" / "random" / "seed0", replayed)
    (replayed / "metadata.json").write_text(json.dumps({"backend": "replay", "machine": {
        "cpu_model": "CPU A"}}))
    (tmp_path / "live" / "bo" / "seed0").mkdir(parents=True)
    est = speed.from_logs(table, tmp_path / "live")
    assert est["CPU A"]["n_trials"] == 20 and est["CPU A"]["n_searches"] == 2
    assert est["CPU A"]["factor"] == pytest.approx(2.0, rel=0.1)
    assert est["CPU B"]["factor"] == pytest.approx(3.0, rel=0.1)
    assert est["model_cv_ratio"] == pytest.approx(1.0, rel=0.1)
    assert speed.main(["--scale", "smoke", "--table", str(table), "--from-logs",
                       str(tmp_path / "none")]) == 2
