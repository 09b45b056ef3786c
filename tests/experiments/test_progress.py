"""Progress lines of long commands: elapsed time, budget used, ETA, and what stopped them."""

from __future__ import annotations

import io
import json

from experiments.bookkeeping import Progress
from experiments.campaign import how_it_ended
from experiments.cli import duration


def test_duration_reads_like_a_clock():
    assert duration(7.46) == "7.5s" and duration(125) == "2m05s"
    assert duration(3725) == "1h02m" and duration(-3) == "0.0s"


def test_progress_line_shows_budget_elapsed_eta_and_stop_reason(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("experiments.bookkeeping.time.monotonic", lambda: now[0])
    out = io.StringIO()
    bar = Progress("asha small seed0", 1024, out, device_budget=2880.0)
    counts = {"ok": 2, "stopped": 5, "failed": 0}
    now[0] = 160.0  # 60 s in, a quarter of the device budget used: 180 s left
    bar.update(counts, 0.31, 100, 2, device=720.0)
    line = out.getvalue().splitlines()[-1]
    assert "device 720/2880 s, epochs 100/1024" in line
    assert "elapsed 1m00s, ETA 3m00s" in line and "best val_loss 0.31" in line
    now[0] = 400.0
    bar.update(counts, 0.29, 400, 0, final=True, device=2890.0,
               reason="stopped by device_budget")
    line = out.getvalue().splitlines()[-1]
    assert line.endswith("elapsed 5m00s | done: stopped by device_budget") and "ETA" not in line


def test_campaign_summary_says_what_stopped_a_search(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps({"status": "complete",
                                                        "stopped_by": "time"}))
    assert how_it_ended(0, tmp_path) == \
        "complete, stopped by time (wall-time safety cap)"
    assert how_it_ended(143, tmp_path).startswith("exit 143: ")
    assert how_it_ended(1, tmp_path / "none") == "exit 1: no metadata"


def test_eta_follows_the_wall_time_cap_when_it_binds_first(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("experiments.bookkeeping.time.monotonic", lambda: now[0])
    out = io.StringIO()
    bar = Progress("random small seed0", 1024, out, device_budget=2880.0, time_budget=240.0)
    now[0] = 120.0  # half the 240 s cap, a tenth of the device-seconds: 120 s left, not 18 min
    bar.update({"ok": 1, "stopped": 0, "failed": 0}, 0.4, 10, 2, device=288.0)
    assert "elapsed 2m00s, ETA 2m00s" in out.getvalue()


def test_live_progress_counts_both_busy_workers_as_running(tmp_path, capsys, monkeypatch):
    """The line is drawn after the free worker got its next trial: with 2 workers and trials
    left, it says "running 2", not the 1 still busy at the moment a result came back."""
    import experiments.driver as driver
    from experiments.backends.live import open_backend

    class EveryRound(Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.interval = 0.0

    monkeypatch.setattr(driver, "Progress", EveryRound)
    monkeypatch.setenv("EXP_SYNTHETIC", "{}")
    plan = driver.plan_search("random", "smoke", 0, evaluator="process", workers=2,
                              out=str(tmp_path / "random"), trainable="synthetic", budget=24)
    assert driver.run(plan, open_backend("process"), progress=True) == 0
    lines = [s for s in capsys.readouterr().err.splitlines() if "[random smoke seed0]" in s]
    drawn = [(int(s.split("epochs ")[1].split("/")[0]), int(s.split("running ")[1].split()[0]))
             for s in lines if "done:" not in s]
    # While epochs are left the free worker gets a trial before the line is drawn; once the
    # budget is spent a worker may stay idle. Results may come back one or two at a round.
    while_left = [running for epochs, running in drawn if epochs < 24]
    assert drawn[0] == (0, 2) and len(while_left) >= 2, lines
    assert any(epochs > 0 for epochs, _ in drawn if epochs < 24), lines
    assert while_left == [2] * len(while_left), lines
