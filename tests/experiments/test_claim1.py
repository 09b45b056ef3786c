"""The claim-1 references runner (experiments/claim1.py), on the synthetic trainable."""

from __future__ import annotations

import csv

import pytest

from experiments import claim1, logs
from mlpf.scales import get_scale


def test_plan_holds_every_reference_and_seed():
    runs = claim1.plan("small", seeds=5)
    by_ref = {}
    for r in runs:
        by_ref.setdefault(r.reference, []).append(r)
    assert {k: len(v) for k, v in by_ref.items()} == {
        "default": 5, "default_lr": 20, "paper_best": 5, "converged": 5}
    assert {r.lr for r in by_ref["default_lr"]} == set(claim1.HAND_LRS)
    assert {r.epochs for r in by_ref["converged"]} == {4 * get_scale("small").max_epochs}
    assert len({r.key for r in runs}) == len(runs)  # one key per training


def test_paper_best_is_mapped_like_the_default_and_the_space():
    pb = claim1.paper_best("small")
    # width factor 1/8: distance 64 -> 8; bins per event kept: 64 of 6,400 -> 3 of 320
    assert pb["distance_dim"] == 8 and pb["bin_size"] == 3
    assert pb["lr"] == pytest.approx(1.1e-3) and pb["num_node_messages"] == 3
    assert (pb["num_graph_layers_common"], pb["num_graph_layers_energy"]) == (3, 2)
    from experiments.space import bin_sizes

    assert pb["bin_size"] in bin_sizes("small")
    assert claim1.paper_best("paper")["bin_size"] == 64


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_runs_resume_and_refuse_other_logs(tmp_path, capsys):
    out = tmp_path / "c1"
    argv = ["--scale", "smoke", "--seeds", "2", "--trainable", "synthetic", "--out", str(out),
            "--checkpoints", str(tmp_path / "ck"), "--workers", "1"]
    assert claim1.main(argv) == 0
    runs = _rows(out / "runs.csv")
    assert len(runs) == len(claim1.plan("smoke", 2)) == 14
    assert all(r["status"] == "ok" for r in runs)
    lc = _rows(out / logs.LEARNING_CURVES_CSV)
    assert len(lc) == sum(r.epochs for r in claim1.plan("smoke", 2))
    meta = logs.read_json(out / logs.METADATA_JSON)
    assert meta["loss"] == {"name": "synthetic"} and meta["status"] == "complete"
    # a complete folder: nothing trained, nothing rewritten
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert claim1.main(argv) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # lose the last two finished rows: exactly those are trained again, curves not duplicated
    text = (out / "runs.csv").read_text().splitlines(keepends=True)
    (out / "runs.csv").write_text("".join(text[:-2]))
    assert claim1.main(argv) == 0
    assert len(_rows(out / "runs.csv")) == 14
    assert len(_rows(out / logs.LEARNING_CURVES_CSV)) == len(lc)
    # more seeds extend the same folder
    assert claim1.main([*argv[:3], "3", *argv[4:]]) == 0
    assert len(_rows(out / "runs.csv")) == 21
    # a folder of another scale is refused in one line
    capsys.readouterr()
    assert claim1.main(["--scale", "small", *argv[2:]]) == 2
    assert "another scale" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--seeds", "0"], ["--references", "default,nope"],
                                 ["--workers", "100000"]])
def test_bad_command_lines_are_one_line_errors(tmp_path, capsys, bad):
    argv = ["--scale", "smoke", "--trainable", "synthetic", "--out", str(tmp_path / "c"), *bad]
    assert claim1.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
