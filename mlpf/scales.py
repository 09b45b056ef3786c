"""Scale presets shared by data generation, training and the searches.

``smoke`` is for tests (a few seconds per epoch), ``small`` is the default laptop-sized
reproduction, ``paper`` mirrors the original study (JUWELS Booster, 200 epochs, pileup 200).

The untuned default of every scale is the study era's MLPF Delphes configuration (the public
MLPF repository's ``parameters/delphes.yaml`` of February 2022, see :data:`STUDY_DEFAULT`),
mapped to the scale by one width factor (every width times ``width_factor``), by keeping its
bins per event (10: bins of 640 elements on events padded to 6,400) and by one schedule factor,
nothing re-tuned. The search space (:mod:`experiments.space`) is mapped by the same three
numbers.

The schedule rule: a learning-rate schedule does at a scale over a whole run (max_t epochs)
what it does over the study's whole run. The study trained ``STUDY_TRAIN_EVENTS`` events per
epoch for ``STUDY_MAX_EPOCHS`` epochs; a scale trains ``n_train`` for ``max_epochs``. At the same
batch size a run then takes ``schedule_factor = n_train * max_epochs / (STUDY_TRAIN_EVENTS *
STUDY_MAX_EPOCHS)`` times the study's optimiser steps, so every decay length is multiplied by
that factor: ``lr_decay_steps`` stays in the study's steps (the default's 10,000, the space's 10
to 2,000, as in the paper) and the scale's ``step_scale`` (= the factor) turns it into steps of
this run. The learning rate at the end of max_t is then the study's at its max_t, for every
batch size. The default's 0.99 every 10,000 steps ends a
200-epoch run at 0.99 ** 40 = 0.67 of its start at 20 events per step; unmapped, at small (400
steps per run) it would end at 0.9996: no decay at all. The learning rate itself is not
mapped (Adam's step size does not scale with the number of steps); how much a learning rate set
for 400,000 steps loses in 400 is what the claim-1 references measure
(:mod:`experiments.claim1`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The study era's default (PFNetDense for Delphes, Feb 2022). Widths at width factor 1;
# bin_size is per STUDY_EVENT_ELEMENTS elements. Its learning rate decays by 0.99 every
# 10,000 steps (staircase there, continuous here: the same to 0.01 % at any step); its batch
# was 5 events on each of 4 GPUs, 20 events per step.
STUDY_DEFAULT = dict(
    width=256, output_dim=256, distance_dim=128, ffn_dist_hidden_dim=128,
    ffn_dist_num_layers=1, num_node_messages=1, layernorm=False, dropout=0.0, dist_mult=0.1,
    clip_value_low=0.0, normalize_degrees=True, activation="elu", num_graph_layers_common=3,
    num_graph_layers_energy=3, lr=1e-4, batch_size=20, lr_schedule="exponential",
    lr_decay_rate=0.99, lr_decay_steps=10_000)
STUDY_EVENT_ELEMENTS = 6400  # events padded to this many elements
STUDY_BINS_PER_EVENT = 10  # bin_size 640
STUDY_TRAIN_EVENTS = 40_000  # training events per epoch: 80 % of 500 ttbar files x 100
STUDY_MAX_EPOCHS = 200  # the study's max_t
WIDTHS = ("width", "output_dim", "distance_dim", "ffn_dist_hidden_dim")


def schedule_factor(n_train: int, max_epochs: int) -> float:
    """Optimiser steps of a run of ``max_epochs`` epochs over ``n_train`` events over the
    study's (at the same batch size): what every decay length in steps is multiplied by."""
    return n_train * max_epochs / (STUDY_TRAIN_EVENTS * STUDY_MAX_EPOCHS)


def study_default(width_factor: float, event_elements: int, step_factor: float = 1.0) -> dict:
    """:data:`STUDY_DEFAULT` at a width factor, an event size (elements per event) and a
    schedule factor (:func:`schedule_factor`, set as ``step_scale``)."""
    cfg = dict(STUDY_DEFAULT)
    for k in WIDTHS:
        cfg[k] = max(1, round(cfg[k] * width_factor))
    cfg["bin_size"] = max(1, round(event_elements / STUDY_BINS_PER_EVENT))
    cfg["step_scale"] = step_factor
    return cfg


@dataclass(frozen=True)
class Scale:
    name: str
    n_train: int  # events
    n_val: int
    n_test: int
    pileup: float  # mean soft-QCD pileup interactions overlaid per event
    events_per_file: int
    max_epochs: int  # max_t of the searches, and the epochs of a full training
    width_factor: float  # widths of the study's model and search space times this
    event_elements: int  # typical elements per event (the study's: 6,400 padded)
    model: dict = field(default_factory=dict)  # TrainConfig overrides besides the default

    @property
    def splits(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}

    @property
    def schedule_factor(self) -> float:
        """This scale's optimiser steps per run over the study's (see the module's rule)."""
        return schedule_factor(self.n_train, self.max_epochs)

    @property
    def default(self) -> dict:
        """TrainConfig overrides of the untuned default at this scale."""
        return {**study_default(self.width_factor, self.event_elements, self.schedule_factor),
                **self.model}


# Events without pileup (smoke, small) hold 331 elements on average (ttbar, max 692).
SCALES = {
    "smoke": Scale("smoke", n_train=200, n_val=100, n_test=100, pileup=0.0,
                   events_per_file=100, max_epochs=9, width_factor=1 / 16, event_elements=320,
                   # tests train a few epochs: a learning rate that visibly learns in them
                   model=dict(lr=1e-3)),
    "small": Scale("small", n_train=500, n_val=300, n_test=300, pileup=0.0,
                   events_per_file=100, max_epochs=16, width_factor=1 / 8, event_elements=320),
    "paper": Scale("paper", n_train=40000, n_val=10000, n_test=10000, pileup=200.0,
                   events_per_file=100, max_epochs=200, width_factor=1.0,
                   event_elements=STUDY_EVENT_ELEMENTS),
}
DEFAULT_SCALE = "small"


def get_scale(name: str) -> Scale:
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown scale {name!r}; choose one of {', '.join(SCALES)}") from None
