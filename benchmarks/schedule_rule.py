"""What the schedule rule (mlpf/scales.py) does to the paper's search space: the learning rate
at the end of a full run, over the paper's decay steps, rates and batch sizes.

    .venv/bin/python benchmarks/schedule_rule.py          # a second; prints a Markdown table

Draws 100,000 (lr_decay_steps, lr_decay_rate, batch_size) from the space (experiments/space.py)
and computes rate ** (steps per run / (decay steps x step_scale)) for the paper's run (200 epochs
of 40,000 events), for small with the rule (step_scale 1/1,000) and for small without it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.space import PAPER_DECAY_STEPS, problem_for  # noqa: E402
from mlpf.scales import get_scale  # noqa: E402


def main() -> int:
    rng = np.random.default_rng(0)
    n = 100_000
    batches = np.array(problem_for("small").space["batch_size"].sequence)
    steps = rng.choice(np.array(PAPER_DECAY_STEPS), n)
    rate = rng.uniform(0.9, 1.0, n)
    batch = rng.choice(batches, n)
    print("| run | median lr at max_t / lr | share below 1 % | share above 50 % |")
    print("|---|---|---|---|")
    for name, scale, step_scale in (("paper", "paper", None), ("small, rule", "small", None),
                                    ("small, unmapped", "small", 1.0)):
        sc = get_scale(scale)
        f = sc.schedule_factor if step_scale is None else step_scale
        end = rate ** (np.ceil(sc.n_train / batch) * sc.max_epochs / (steps * f))
        print(f"| {name} | {np.median(end):.3g} | {(end < 0.01).mean():.1%} | "
              f"{(end > 0.5).mean():.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
