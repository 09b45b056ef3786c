"""The figure builder on synthetic logs: every file, byte-identical reruns, exit codes."""

import hashlib
import json

import pytest

from analysis import figures
from analysis import logs as L
from analysis.make_figures import build, main
from tests.analysis.fakelogs import synthetic_scale, write_search

TABLES = [f"{n}.{e}" for n in ("summary", "best_configs") for e in ("md", "tex", "csv")]
TABLES += [f"{n}.{e}" for n in ("fractions", "targets") for e in ("md", "tex")]
TABLES += ["per_seed.csv", "trials.csv", "incumbent.csv", "references.json"]


def _digests(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())
            if p.is_file()}


QUIET = pytest.mark.filterwarnings("ignore::analysis.logs.LogWarning")  # methods left out


@QUIET
def test_builds_every_file_and_reruns_byte_identical(tmp_path):
    synthetic_scale(tmp_path / "results")
    assert main(["--scale", "smoke", "--results", str(tmp_path / "results"),
                 "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out" / "smoke"
    expected = set(TABLES) | {f"{n}.{e}" for n in figures.FIGURES for e in ("pdf", "png")}
    assert {p.name for p in out.iterdir()} == expected
    assert all((out / n).stat().st_size > 0 for n in expected)
    first = _digests(out)
    build("smoke", tmp_path / "results", tmp_path / "out")
    second = _digests(out)
    assert all(first[n] == second[n] for n in TABLES)
    summary = (out / "summary.md").read_text()
    assert "| random" in summary and "| asha" in summary and "L_ref = " in summary


def test_missing_logs_exit_2_with_one_line(tmp_path, capsys):
    assert main(["--scale", "smoke", "--results", str(tmp_path), "--out",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no HPO logs under") and "\n" not in err
    assert not (tmp_path / "out" / "smoke").exists()


def test_only_default_counts_as_missing(tmp_path, capsys):
    write_search(tmp_path, "smoke", L.DEFAULT_METHOD, 0, [{"job_id": 0, "losses": [1.0]}])
    assert main(["--scale", "smoke", "--results", str(tmp_path), "--out",
                 str(tmp_path / "out")]) == 2


def test_partial_logs_warn_and_build(tmp_path, capsys):
    res = tmp_path / "results"
    synthetic_scale(res, methods=("asha",), seeds=(0,), n_trials=4, default=False)
    # an interrupted second seed without end_time, and an empty method folder
    d = write_search(res, "smoke", "asha", 1, [{"job_id": 0, "losses": [3.0, 2.0]}],
                     metadata={L.MD_END: None, L.MD_STATUS: "interrupted"})
    (d / L.RESULTS_CSV).unlink()
    (res / "smoke" / "hyperband" / "seed0").mkdir(parents=True)
    assert main(["--scale", "smoke", "--results", str(res), "--out",
                 str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "end_time" in err and "results.csv" in err
    assert "no logs of random, hyperband, asha_bo" in err and "reference loss" in err
    summary = (tmp_path / "out" / "smoke" / "summary.md").read_text()
    assert "No default-configuration loss" in summary
    assert "| unfinished" in summary  # seed 1's trial is only in learning_curves.csv
    per = (tmp_path / "out" / "smoke" / "per_seed.csv").read_text().splitlines()
    assert len(per) == 3  # header + two asha seeds; the empty hyperband folder is skipped


@QUIET
def test_physics_table_included_only_when_present(tmp_path):
    synthetic_scale(tmp_path / "results", seeds=(0,), n_trials=3)
    build("smoke", tmp_path / "results", tmp_path / "out")
    out = tmp_path / "out" / "smoke"
    assert not (out / "physics.md").exists()
    for run, eff in (("default", 0.8), ("best", 0.9)):
        (out / "physics" / run).mkdir(parents=True)
        (out / "physics" / run / "metrics.json").write_text(json.dumps(_trainer_metrics(eff)))
        (out / "physics" / run / "learning_curve.csv").write_text(
            "epoch,val_loss\n1,3.0\n2,%s\n" % (2.0 if run == "best" else 2.5))
    written = build("smoke", tmp_path / "results", tmp_path / "out")
    assert out / "physics.md" in written and (out / "physics.png").exists()
    md = (out / "physics.md").read_text()
    row = next(r for r in md.splitlines() if r.startswith("| efficiency ") and "ch.had" in r)
    assert [c.strip() for c in row.split("|")[3:7]] == ["0.8", "0.9", "+12.5", "0.95"]
    assert "| val loss " in md and "-20.0" in md  # final val loss 2.5 -> 2.0


def _trainer_metrics(eff: float) -> dict:
    """metrics.json in the shape mlpf.train writes (values made up for the test)."""
    def block(e):
        cls = {"efficiency": e, "fake_rate": 1 - e, "pt": {"resolution": 0.1, "n": 5},
               "energy": {"resolution": None, "n": 1}}
        return {"accuracy": e, "all": cls, "classes": {"ch.had": cls, "photon": cls}}
    return {"final": {"epoch": 2, "val_loss": 2.0 if eff > 0.85 else 2.5},
            "mlpf": block(eff), "reference_pf": block(0.95)}


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_each_figure_alone(tmp_path, name):
    synthetic_scale(tmp_path / "results", seeds=(0,), n_trials=3)
    runs = L.load_scale(tmp_path / "results" / "smoke")
    trials, _ = L.tidy(runs)
    paths = figures.save(figures.FIGURES[name](runs, trials, {}), tmp_path, name)
    assert [p.exists() for p in paths] == [True, True]


def _diverged_scale(root, max_t=9):
    """synthetic_scale plus a random search whose first two trials diverge (final loss 1e24,
    then an epoch at inf) in 2 of 3 seeds, so that the median incumbent is 1e24 for a while;
    and a learning-curve table whose top 1 / 5 / 10 % targets lie 0.99e-4, 1.05e-4 and 1.1e-4
    above its best loss 1.0: lines too close for labels at their own heights."""
    synthetic_scale(root, seeds=(0, 1, 2))
    for k in (0, 1):
        good = [{"job_id": j, "losses": [1.5 + 0.1 * j + 1 / e for e in range(1, max_t + 1)],
                 "t0": 20.0 + 90 * j} for j in range(2, 5)]
        write_search(root, "smoke", "random", k,
                     [{"job_id": 0, "losses": [1e24], "t0": 0.0},
                      {"job_id": 1, "losses": [3.0, float("inf")], "t0": 0.0, "worker": 1,
                       "objective": "F_diverged"}, *good],
                     settings={"max_t": max_t, "grace": 1, "eta": 3})
    finals = [1.0] + [1.0001 + 1e-6 * i for i in range(1, 10)] + [1.5 + 0.01 * i
                                                                  for i in range(90)]
    (root / "smoke" / L.LCTABLE_CSV).write_text("config_id,epoch,val_loss\n" + "".join(
        f"{i},{e},{x + 1.0 / e - 1.0 / max_t}\n" for i, x in enumerate(finals)
        for e in range(1, max_t + 1)))


@QUIET
def test_diverged_trials_never_stretch_an_axis_and_targets_are_labelled_apart(tmp_path):
    from analysis.metrics import per_seed_metrics, reference_losses
    from analysis.summary_plots import LABEL_SEP
    from tests.analysis.test_summary_plots import tick_label_overlaps

    _diverged_scale(tmp_path)
    runs = L.load_scale(tmp_path / "smoke")
    trials, _ = L.tidy(runs)
    finals, name = L.table_for(runs, tmp_path / "smoke" / L.LCTABLE_CSV)
    refs = reference_losses(runs, trials, finals, table_name=name)
    _, refs = per_seed_metrics(runs, trials, refs)
    assert refs["l_ref"] == 1.0 and refs["targets"][0.05] == pytest.approx(1.000105, abs=1e-6)
    for name in ("learning_curves", "best_vs_compute", "best_vs_wall", "regret_vs_compute"):
        fig = figures.FIGURES[name](runs, trials, refs)
        logs = [ax for ax in fig.axes if ax.get_visible() and ax.get_yscale() == "log"]
        assert logs, name
        for ax in logs:
            assert ax.get_ylim()[1] < 1e4, name  # not 1e24
            assert tick_label_overlaps(ax, fig) == [], name
        if name == "learning_curves":
            said = {ax.get_title(): [t.get_text() for t in ax.texts] for ax in fig.axes}
            top = fig.axes[0].get_ylim()[1]
            assert said["random"] == [f"4 epoch losses above {top:.3g} (diverged)"]  # 1e24, inf
            assert said["asha"] == []
        if name == "regret_vs_compute":
            labels = [t for t in fig.axes[-1].texts if t.get_text().startswith("top ")]
            assert len(labels) == 3
            at = sorted((a.xy[1], a.xyann[1]) for a in labels)  # (line, label), axes fraction
            assert min(b[0] - a[0] for a, b in zip(at, at[1:])) < LABEL_SEP  # lines close
            assert min(b[1] - a[1] for a, b in zip(at, at[1:])) >= LABEL_SEP - 1e-9
        figures.plt.close(fig)


def test_a_table_passed_but_missing_is_one_line_and_exit_2(tmp_path, capsys):
    from analysis import make_figures

    assert make_figures.main(["--scale", "smoke", "--table", str(tmp_path / "no.csv"),
                              "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no learning-curve table" in err
