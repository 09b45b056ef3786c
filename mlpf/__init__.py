"""MLPF: machine-learned particle-flow reconstruction (the base model; knows nothing of HPO)."""
