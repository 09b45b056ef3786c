"""Tampered logs fed to the analysis (issue 27): one warning line and the best table that can
still be built, or one error line and exit 2; never a traceback, never a silent wrong number.

Figures are switched off (``figures.FIGURES`` emptied): the tables carry every number.
"""

import json
import shutil

import pandas as pd
import pytest

from analysis import figures, replay, tables
from analysis import logs as L
from analysis.make_figures import main
from experiments import logs as schema
from tests.analysis.fakelogs import replay_scale, synthetic_scale

MAX_T = 9  # synthetic_scale's


@pytest.fixture
def scale(tmp_path, monkeypatch):
    """results/smoke/ with random and asha x 2 seeds and the default; figures off."""
    monkeypatch.setattr(figures, "FIGURES", {})
    res = tmp_path / "results"
    synthetic_scale(res, seeds=(0, 1), n_trials=6)
    return res


def _build(res, capsys):
    out = res.parent / "out"
    rc = main(["--scale", "smoke", "--results", str(res), "--out", str(out)])
    return rc, capsys.readouterr().err, out / "smoke"


def _seed0(res):
    return res / "smoke" / "random" / "seed0"


def _edit_json(path, **values):
    md = json.loads(path.read_text())
    md.update(values)
    path.write_text(json.dumps(md))


def _edit_csv(path, column, value, row=0):
    df = pd.read_csv(path, keep_default_na=False)
    df[column] = df[column].astype(object)
    df.loc[row, column] = value
    df.to_csv(path, index=False)


# ---- metadata.json: fields of the wrong type or range --------------------------------------
@pytest.mark.parametrize("field,value", [
    ("workers", "abc"), ("workers", [1, 2]), ("workers", -2),
    ("start_time", "yesterday"), ("end_time", "x"), ("end_time", 0.0),  # ends before it starts
    ("segments", "abc"), ("segments", ["a"]), ("segments", [{"start_time": "x"}]),
    ("method_settings", {"settings": {"max_t": "abc"}}), ("decision_times", "abc"),
    ("budget_device_s", "abc"), ("method", {"settings": {"max_t": [9]}}),
])
def test_metadata_field_of_the_wrong_type_is_ignored_with_a_warning(scale, capsys, field,
                                                                     value):
    _edit_json(_seed0(scale) / schema.METADATA_JSON, **{field: value})
    rc, err, out = _build(scale, capsys)
    assert rc == 0
    lines = [x for x in err.splitlines() if "metadata.json" in x and field in x]
    assert lines and all(x.startswith("warning: ") for x in lines), err
    per = pd.read_csv(out / "per_seed.csv")
    assert (per["wall_hours"].dropna() >= 0).all()  # never a negative wall time


# ---- results.csv: text or a negative count in the m: columns --------------------------------
@pytest.mark.parametrize("column,value", [(schema.M_EPOCHS, "abc"), (schema.M_BUDGET, "x"),
                                          (schema.M_EPOCHS, -3),
                                          (schema.M_TIMESTAMP_GATHER, "yesterday")])
def test_results_meta_cell_of_the_wrong_type_is_a_damaged_row(scale, capsys, column, value):
    _edit_csv(_seed0(scale) / schema.RESULTS_CSV, column, value)
    rc, err, _ = _build(scale, capsys)
    assert rc == 0
    assert f"results.csv, line 2: {column}=" in err and "skipped" in err, err


# ---- results.csv: an objective that is neither -val_loss nor F_<reason> ----------------------
@pytest.mark.parametrize("value", ["abc", 5.0])  # 5.0: a val_loss of -5
def test_objective_neither_a_loss_nor_a_failure_is_a_damaged_row(scale, capsys, value):
    _edit_csv(_seed0(scale) / schema.RESULTS_CSV, schema.OBJECTIVE, value)
    rc, err, out = _build(scale, capsys)
    assert rc == 0
    assert "results.csv" in err and "objective" in err and "skipped" in err, err
    per = pd.read_csv(out / "per_seed.csv")
    assert (per["incumbent_loss"] > 0).all()  # a loss of -5 never becomes the incumbent
    refs = json.loads((out / "references.json").read_text())
    assert refs["l_ref"] > 0


# ---- lctable.csv / lctable.json read by the analysis ----------------------------------------
def _table(path, losses):
    """A learning-curve table of len(losses) configurations, max_t 9, final loss losses[i]."""
    rows = [{schema.TABLE_CONFIG_ID: c, schema.TABLE_REPLICATE: 0, schema.EPOCH: e,
             schema.VAL_LOSS: x + 1.0 / e, schema.TRAIN_LOSS: x, schema.EPOCH_SECONDS: 1.0,
             schema.TABLE_STATUS: schema.STATUS_OK, "p:lr": 1e-3}
            for c, x in enumerate(losses) for e in range(1, MAX_T + 1)]
    schema.write_csv(path, [*schema.TABLE_BASE_COLUMNS, "p:lr"], rows)
    schema.write_json(path.with_suffix(".json"), {"scale": "smoke", "max_t": MAX_T})
    return path


def test_negative_table_loss_is_a_damaged_row(scale, capsys):
    path = _table(scale / "smoke" / schema.LCTABLE_CSV, [2.0, 2.5, 3.0, 3.5])
    df = pd.read_csv(path)
    df.loc[(df.config_id == 1) & (df.epoch == MAX_T), schema.VAL_LOSS] = -5.0
    df.to_csv(path, index=False)
    rc, err, out = _build(scale, capsys)
    assert rc == 0
    assert "lctable.csv, line" in err and "val_loss='-5.0' is outside" in err, err
    refs = json.loads((out / "references.json").read_text())
    assert refs["l_ref"] > 0 and refs["n_configs"] == 3


@pytest.mark.parametrize("text", [b"[1, 2]", b"{not json", b'{"max_t": "sm\xff"}',
                                  b'{"max_t": "abc"}', b'{"max_t": -3}'])
def test_tampered_table_json_is_ignored_with_a_warning(scale, capsys, text):
    path = _table(scale / "smoke" / schema.LCTABLE_CSV, [2.0, 2.5, 3.0, 3.5])
    path.with_suffix(".json").write_bytes(text)
    rc, err, out = _build(scale, capsys)
    assert rc == 0
    assert "warning: " in err and "lctable.json" in err, err
    refs = json.loads((out / "references.json").read_text())
    assert refs["n_configs"] == 4  # max_t from the table's largest epoch


# ---- CSV outputs: no spreadsheet formula --------------------------------------------------
def test_csv_outputs_neutralise_formula_cells(scale, capsys):
    _edit_csv(_seed0(scale) / schema.RESULTS_CSV, "p:act", '=HYPERLINK("http://x","y")')
    shutil.copytree(scale / "smoke" / "random", scale / "smoke" / "@random")
    rc, err, out = _build(scale, capsys)
    assert rc == 0, err
    trials = (out / "trials.csv").read_text()
    assert "'=HYPERLINK" in trials and "'@random" in trials
    for name in ("trials.csv", "per_seed.csv", "summary.csv", "best_configs.csv",
                 "incumbent.csv"):
        for cell in pd.read_csv(out / name, dtype=str, keep_default_na=False).stack():
            if cell[:1] in tables.FORMULA_STARTS:
                float(cell)  # only numbers (a negative improvement) start that way


def test_safe_cells_leaves_numbers_and_plain_text_alone():
    df = pd.DataFrame({"a": ["=1+1", "-2.5", "+x", "@y", "ok", None], "b": [-1.0] * 6})
    out = tables.safe_cells(df)
    assert list(out["a"][:5]) == ["'=1+1", "-2.5", "'+x", "'@y", "ok"] and out["a"].isna()[5]
    assert out["b"].dtype == float and (out["b"] == -1.0).all()


# ---- analysis.replay: its other inputs ----------------------------------------------------
@pytest.mark.parametrize("text", [b'{"backend": "re\xffplay"}', b"[1]"])
def test_replay_check_names_an_unreadable_metadata(tmp_path, text):
    replay_scale(tmp_path, methods=("random",), seeds=range(2), default=False)
    root = tmp_path / "smoke" / L.REPLAY_DIR
    (root / "random" / "seed1" / schema.METADATA_JSON).write_bytes(text)
    with pytest.raises(replay.ReplayLogsError, match="seed1 has an unreadable metadata.json"):
        replay.check_logs(root, required=("random",), min_seeds=2)


def test_replay_surrogate_report_and_compare_tampered(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(figures, "FIGURES", {})
    monkeypatch.setattr(replay, "FIGURES", {})
    methods = ("random", "asha", "asha_bo")
    replay_scale(tmp_path, methods=methods, seeds=range(2), default=True)
    smoke = tmp_path / "smoke"
    (smoke / "lctable.surrogate.json").write_text("[1, 2]")
    (smoke / "lctable.surrogate_heldout.csv").write_text("fold,config_id,epoch,true,pred\n"
                                                         "0,1,1,abc,1.0\n")
    other = tmp_path / "other"
    other.mkdir()
    pd.DataFrame({"method": list(methods), "incumbent_loss": ["abc", 1.0, 2.0]}).to_csv(
        other / "summary.csv", index=False)
    rc = replay.main(["--scale", "smoke", "--results", str(smoke / L.REPLAY_DIR), "--out",
                      str(tmp_path / "out"), "--min-seeds", "2", "--methods",
                      ",".join(methods), "--compare", str(other)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "lctable.surrogate.json" in err and "summary.csv, line 2" in err, err
    assert all(x.startswith("warning: ") for x in err.splitlines()), err

