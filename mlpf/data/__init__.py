"""Delphes-format particle-flow events: format, safe reader, writer and generator."""

from mlpf.data.format import (  # noqa: F401
    CLASS_NAMES,
    ELEM_TOWER,
    ELEM_TRACK,
    N_CLASSES,
    X_COLUMNS,
    Y_COLUMNS,
    Event,
)
from mlpf.data.io import DataError, iter_events, load_events, read_file, write_file  # noqa: F401
