"""Scale presets shared by data generation, training and the searches.

``smoke`` is for tests (a few seconds per epoch), ``small`` is the default laptop-sized
reproduction, ``paper`` mirrors the original study (JUWELS Booster, 200 epochs, pileup 200).
Model-size overrides apply on top of :class:`mlpf.train.TrainConfig` defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scale:
    name: str
    n_train: int  # events
    n_val: int
    n_test: int
    pileup: float  # mean soft-QCD pileup interactions overlaid per event
    events_per_file: int
    max_epochs: int  # max_t of the searches, and the epochs of a full training
    model: dict = field(default_factory=dict)  # TrainConfig overrides for this scale

    @property
    def splits(self) -> dict[str, int]:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}


SCALES = {
    "smoke": Scale("smoke", n_train=200, n_val=100, n_test=100, pileup=0.0,
                   events_per_file=100, max_epochs=9,
                   model=dict(width=16, ffn_dist_hidden_dim=16, distance_dim=8, output_dim=16,
                              bin_size=16)),
    "small": Scale("small", n_train=1000, n_val=300, n_test=300, pileup=0.0,
                   events_per_file=100, max_epochs=27,
                   model=dict(width=32, ffn_dist_hidden_dim=32, distance_dim=16, output_dim=32,
                              bin_size=32)),
    "paper": Scale("paper", n_train=40000, n_val=10000, n_test=10000, pileup=200.0,
                   events_per_file=100, max_epochs=200,
                   model=dict(width=256, ffn_dist_hidden_dim=128, ffn_dist_num_layers=2,
                              distance_dim=128, output_dim=128, bin_size=128,
                              num_graph_layers_common=3, num_graph_layers_energy=3)),
}
DEFAULT_SCALE = "small"


def get_scale(name: str) -> Scale:
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown scale {name!r}; choose one of {', '.join(SCALES)}") from None
