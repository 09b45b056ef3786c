"""The learning-curve table as a benchmark others can use: any configuration of the paper's
search space (arXiv 2203.01112), any epoch -> its losses, cost and failure, from the table's
rows or from its surrogate; and the table exported for Syne Tune's blackbox repository.

    python -m experiments.lcbench --scale small --table results/small/lctable.csv \
        --query '{"lr": 0.001, "batch_size": 32}' --epoch 4      # one JSON line
    ... --query '{...}' --epoch 4 --lookup surrogate --world 3 [--force-surrogate]
    ... --sample 5 --seed 0                  # 5 configurations of the space, one JSON line each
    ... --export-syne DIR                    # the table in Syne Tune's BlackboxTabular format

(The commands live here, not in :mod:`experiments.table`: the table module depends on the
search space only, and a query on the surrogate needs :mod:`experiments.surrogate`.)

Python:

    >>> from experiments.lcbench import Benchmark
    >>> bench = Benchmark.open("small", "results/small/lctable.csv")    # nearest table row
    >>> bench.query(bench.sample(1, seed=0)[0], epoch=4)["val_loss"]

:meth:`Benchmark.query` returns ``val_loss``, ``train_loss``, ``val_loss_reg`` and the loss
components (:data:`experiments.logs.VAL_COMPONENTS`; None where the table does not record them,
and always None on the surrogate, which models val_loss and train_loss only), ``cost_seconds``
(the device-seconds the training took up to the end of that epoch: the table's epoch seconds
times its devices per training, cumulative; of a failed training, up to its failure),
``failed`` (the training failed at or before that epoch; its losses are then None),
``reason`` (the failure's), and which table row the configuration is nearest to
(``table_config``, ``table_distance``). A hyperparameter the configuration leaves out takes the
untuned default's value (configuration 0 of the table); a given value must lie in the space
(:func:`experiments.space.problem_for`) or be the default's (the default itself lies outside
the space in a few dimensions). Lookups: ``nearest`` (:meth:`experiments.table.Table.lookup`:
the recorded training of the nearest configuration, noise and failures included) or
``surrogate`` (:class:`experiments.surrogate.Surrogate`, world ``world``: a seed of the training
noise, the same draws for every caller), refused unless its validation report accepts it or
``force``.

Export (:func:`export_syne`): the files of ``syne_tune.blackbox_repository.blackbox_tabular.
serialize``, one task named ``mlpf_<scale>``, read back by its ``deserialize`` (which needs the
``fastparquet`` and ``huggingface_hub`` packages, ``pip install 'syne-tune[extra]'``):
``hyperparameters.parquet`` (one row per configuration of the table, the space's
hyperparameters), ``objectives_evaluations.npy`` (float32, shape (1 task, configurations,
seeds, max_t epochs, 3 objectives: :data:`OBJECTIVES`), ``fidelities_values.npy`` (1..max_t),
``configspace.json`` (the paper's space as Syne Tune domains,
:func:`experiments.peers.syne_peers.syne_space`), ``fidelityspace.json`` (``epoch``: 1..max_t)
and ``metadata.json`` (objective names, task names, Syne Tune's ``metric_elapsed_time``,
``metric_default`` and ``time_attr`` keys, and where the numbers come from). Seeds: the
table's training seeds of a configuration (replicate 0 first); a configuration trained with
fewer seeds than the most replicated one repeats its replicate 0 in the missing seeds. A
failed training: every objective NaN from the epoch it failed in on (Syne Tune's
``hyperparameter_objectives_values`` then carries the last recorded values forward). Its
writer is ours (pandas and numpy) because Syne Tune's ``serialize`` lives in a package that
imports ``huggingface_hub`` and writes with ``fastparquet``, neither of which ``make peers``
installs; the test reads the export with Syne Tune's ``deserialize``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from experiments import logs
from experiments.space import CHOICE, FLOAT, INT, dimensions, from_unit, problem_for
from experiments.surrogate import DEFAULT_MODEL, LOOKUPS, MODELS, open_lookup
from experiments.table import (
    CONFIG_ID,
    EPOCH,
    REPLICATE,
    STATUS,
    STATUS_OK,
    TABLE_CONFIG,
    TABLE_DISTANCE,
    Table,
    TableError,
    load_table,
)
from mlpf.paths import shown

COST_SECONDS = "cost_seconds"  # device-seconds of the training up to the end of the epoch
FAILED = "failed"  # the training failed at or before the epoch
REASON = "reason"  # its failure reason (diverged, oom, error:<Exception>), else None
COMPONENTS = (logs.VAL_LOSS_REG, *logs.VAL_COMPONENTS)
OBJECTIVES = (logs.VAL_LOSS, logs.TRAIN_LOSS, COST_SECONDS)  # of the Syne Tune export
FIDELITY = logs.EPOCH  # Syne Tune's time_attr of the export


class QueryError(ValueError):
    """A configuration or epoch the benchmark cannot answer: one line for the user."""


class Benchmark:
    """The table (``lookup="nearest"``) or a world of its surrogate (``"surrogate"``) behind
    one interface: :attr:`space`, :meth:`default`, :meth:`sample`, :meth:`query`."""

    def __init__(self, table: Table, lookup: str = "nearest", world: int = 0,
                 force: bool = False, model: str = DEFAULT_MODEL):
        self.table, self.lookup, self.world = table, lookup, int(world)
        self.scale, self.max_t = table.scale, table.max_t
        source = open_lookup(table, lookup, force=force, model=model)
        self._source = source if lookup == "nearest" else source.world(self.world)
        self.space = problem_for(self.scale)
        self._dims = {d.name: d for d in dimensions(self.space)}
        self._components = None  # (config_id, epoch) -> components, read when first needed

    @classmethod
    def open(cls, scale: str, table, **kw) -> Benchmark:
        """The benchmark of the table at path ``table`` (see :class:`Benchmark` for ``kw``)."""
        return cls(load_table(Path(table), scale), **kw)

    def default(self) -> dict:
        """The untuned default's hyperparameters (configuration 0 of the table)."""
        return self.table.complete({})

    def sample(self, n: int, seed: int = 0) -> list[dict]:
        """``n`` configurations drawn uniformly from the space (log scale for log-uniform
        ranges, equal shares for grids and choices: :func:`experiments.space.from_unit`);
        the same ``seed`` gives the same configurations."""
        u = np.random.default_rng(seed).random((n, len(self.space.hyperparameter_names)))
        return [from_unit(self.space, x) for x in u]

    def check(self, config: dict) -> dict:
        """``config`` completed by the default's values; QueryError for a name the space lacks
        or a value outside it (other than the default's)."""
        if not isinstance(config, dict):
            raise QueryError(f"a configuration is a JSON object of hyperparameters, got "
                             f"{type(config).__name__}")
        unknown = sorted(set(config) - set(self._dims))
        if unknown:
            raise QueryError(f"unknown hyperparameter {', '.join(map(repr, unknown))}; the "
                             f"space has {', '.join(sorted(self._dims))}")
        default = self.default()
        for name, v in config.items():
            if not _in_space(self._dims[name], v) and not _same(v, default.get(name)):
                raise QueryError(f"{name}={v!r} lies outside the space "
                                 f"({_describe(self._dims[name])}; or the default's "
                                 f"{default.get(name)!r})")
        return self.table.complete(config)

    def query(self, config: dict, epoch: int) -> dict:
        """What training ``config`` for ``epoch`` epochs gives (see the module docstring)."""
        full = self.check(config)
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) \
                or not 1 <= epoch <= self.max_t:
            raise QueryError(f"epoch must be an integer from 1 to max_t = {self.max_t}, "
                             f"got {epoch!r}")
        entry, meta = self._source.replay(full)
        secs = [c[2] for c in entry.curve]
        out = {logs.EPOCH: int(epoch)}
        if entry.failure is not None and epoch > len(entry.curve):  # failed at len + 1
            out.update({logs.VAL_LOSS: None, logs.TRAIN_LOSS: None,
                        **dict.fromkeys(COMPONENTS),
                        COST_SECONDS: _seconds((sum(secs) + entry.failure_seconds)
                                               * self.table.devices),
                        FAILED: True, REASON: entry.failure})
        else:
            v, t, _ = entry.curve[epoch - 1]
            comps = self._recorded(entry.config_id, epoch) if self.lookup == "nearest" else {}
            out.update({logs.VAL_LOSS: float(v), logs.TRAIN_LOSS: float(t),
                        **{c: comps.get(c) for c in COMPONENTS},
                        COST_SECONDS: _seconds(sum(secs[:epoch]) * self.table.devices),
                        FAILED: False, REASON: None})
        return {**out, TABLE_CONFIG: meta[TABLE_CONFIG], TABLE_DISTANCE: meta[TABLE_DISTANCE]}

    def _recorded(self, config_id: int, epoch: int) -> dict:
        """The loss components the table records for ``config_id`` (replicate 0) at
        ``epoch`` (empty cells: None)."""
        if self._components is None:
            self._components = _read_components(self.table.path)
        return self._components.get((config_id, epoch), {})


def _seconds(x: float) -> float:
    """A sum of epoch times without its float noise: 10 significant digits (12.3456, not
    12.345600000000001), far finer than the table records a time."""
    return float(f"{float(x):.10g}")


def _read_components(path: Path) -> dict:
    import pandas as pd

    df = pd.read_csv(path, on_bad_lines="skip", keep_default_na=False, na_values=[""])
    cols = [c for c in COMPONENTS if c in df.columns]
    if not cols:
        return {}
    df = df[df[STATUS] == STATUS_OK]
    if REPLICATE in df.columns:
        df = df[pd.to_numeric(df[REPLICATE], errors="coerce") == 0]
    out = {}
    for r in df[[CONFIG_ID, EPOCH, *cols]].itertuples(index=False):
        vals = [pd.to_numeric(x, errors="coerce") for x in r[2:]]
        out.setdefault((int(r[0]), int(r[1])), {c: None if pd.isna(x) else float(x)
                                                for c, x in zip(cols, vals)})
    return out


def _same(a, b) -> bool:
    """The same hyperparameter value (a flag only equals a flag: True is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


def _in_space(d, v) -> bool:
    if d.kind in (FLOAT, INT):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        return d.lower <= v <= d.upper and (d.kind == FLOAT or float(v).is_integer())
    return any(_same(v, x) for x in d.values)


def _describe(d) -> str:
    if d.kind in (FLOAT, INT):
        return f"{d.lower:g} to {d.upper:g}" + (", log scale" if d.log else "")
    return ("one of " if d.kind == CHOICE or len(d.values) < 8 else "") + \
        (", ".join(map(str, d.values)) if len(d.values) < 8 else
         f"{d.values[0]}, {d.values[1]}, ..., {d.values[-1]}")


# ---------------------------------------------------------------------------- Syne Tune
def export_syne(table: Table, out_dir) -> Path:
    """Write ``table`` to ``out_dir`` in Syne Tune's BlackboxTabular format (see the module
    docstring); returns ``out_dir``. ImportError when Syne Tune or a parquet writer (pyarrow
    or fastparquet) is missing."""
    import pandas as pd
    import syne_tune.config_space as sp

    from experiments.peers.syne_peers import syne_space

    engine = next((e for e in ("pyarrow", "fastparquet") if _has(e)), None)
    if engine is None:
        raise ImportError("writing hyperparameters.parquet needs pyarrow or fastparquet "
                          "(pip install fastparquet, which Syne Tune's loader reads it with)")
    problem = problem_for(table.scale)
    dims = dimensions(problem)
    extra = sorted(set(table.names) - {d.name for d in dims})
    if extra:
        raise TableError(f"{table.path}: hyperparameters outside the space of "
                         f"{table.scale}: {', '.join(extra)}")
    t, entries = table.max_t, table.entries
    trainings = [table.replicates.get(e.config_id, [e]) for e in entries]
    n_seeds = max(len(r) for r in trainings)
    y = np.full((len(entries), n_seeds, t, len(OBJECTIVES)), np.nan)  # (configs, seeds, t, 3)
    for i, reps in enumerate(trainings):
        for s in range(n_seeds):
            e = reps[s] if s < len(reps) else reps[0]  # missing seeds repeat replicate 0
            k = min(len(e.curve), t)  # a failed training: NaN from its failed epoch on
            curve = np.array(e.curve[:k], dtype=float).reshape(k, 3)
            y[i, s, :k] = np.column_stack([curve[:, 0], curve[:, 1],
                                           np.cumsum(curve[:, 2]) * table.devices])
    hp = pd.DataFrame([{d.name: _cell(d, table.complete(e.params)[d.name]) for d in dims}
                       for e in entries])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logs.write_atomic(out / "configspace.json",
                      json.dumps(sp.config_space_to_json_dict(syne_space(problem))))
    logs.write_atomic(out / "fidelityspace.json", json.dumps(
        sp.config_space_to_json_dict({FIDELITY: sp.randint(1, t)})))
    hp.to_parquet(out / "hyperparameters.parquet", index=False, compression="gzip",
                  engine=engine)
    with open(out / "objectives_evaluations.npy", "wb") as f:  # (tasks, configs, seeds, t, 3)
        np.save(f, y[None].astype(np.float32), allow_pickle=False)
    with open(out / "fidelities_values.npy", "wb") as f:
        np.save(f, np.arange(1, t + 1), allow_pickle=False)
    logs.write_json(out / "metadata.json", {
        "objectives_names": list(OBJECTIVES), "task_names": [f"mlpf_{table.scale}"],
        "metric_elapsed_time": COST_SECONDS, "metric_default": logs.VAL_LOSS,
        "time_attr": FIDELITY,
        "source": f"{shown(table.path)} (sha256 {table.sha256}), written by "
                  "python -m experiments.lcbench --export-syne",
        "config_ids": [e.config_id for e in entries],
        "seeds": "training seeds of a configuration, replicate 0 first; missing seeds "
                 "repeat replicate 0",
        "failed": "NaN from the epoch a training failed in on",
        "cost": f"cumulative device-seconds ({table.meta.get('clock', logs.EPOCH_SECONDS)} "
                f"x {table.devices} device(s))"})
    return out


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _cell(d, v):
    """A hyperparameter value as the parquet column of its kind holds it."""
    v = logs.native(v)
    if d.kind == CHOICE:
        return v
    if d.kind == FLOAT:
        return float(v)
    return int(v) if float(v).is_integer() else float(v)


# ---------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    from experiments.cli import (
        CliError,
        Parser,
        add_scale,
        positive_int,
        run_main,
        seed_value,
    )
    from experiments.table import table_path

    p = Parser("python -m experiments.lcbench", __doc__)
    add_scale(p)
    p.add_argument("--table", default=None, help="default results/<scale>/lctable.csv")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--query", default=None, metavar="JSON",
                      help="a configuration as a JSON object; missing hyperparameters take "
                           "the default's values")
    what.add_argument("--sample", type=positive_int, default=None, metavar="N",
                      help="print N configurations of the space (seeded by --seed)")
    what.add_argument("--export-syne", type=Path, default=None, metavar="DIR",
                      help="write the table in Syne Tune's blackbox repository format")
    p.add_argument("--epoch", type=int, default=None, help="with --query: 1..max_t")
    p.add_argument("--lookup", choices=LOOKUPS, default="nearest",
                   help="with --query: the nearest table row (default) or the surrogate")
    p.add_argument("--world", type=seed_value, default=0,
                   help="with --lookup surrogate: the world (noise seed), default 0")
    p.add_argument("--model", choices=tuple(MODELS), default=DEFAULT_MODEL,
                   help=f"with --lookup surrogate: its model (default {DEFAULT_MODEL})")
    p.add_argument("--force-surrogate", action="store_true",
                   help="use the surrogate although its validation does not accept it")
    p.add_argument("--seed", type=seed_value, default=0, help="with --sample (default 0)")

    def body() -> int:
        a = p.parse_args(argv)
        if a.query is not None:
            try:
                config = json.loads(a.query)
            except json.JSONDecodeError as e:
                raise CliError(f"--query: not JSON ({e})") from None
            if a.epoch is None:
                raise CliError("--query needs --epoch")
        try:
            table = load_table(Path(a.table) if a.table else table_path(a.scale), a.scale)
            if a.export_syne is not None:
                try:
                    out = export_syne(table, a.export_syne)
                except ImportError as e:
                    why = str(e) if "parquet" in str(e) else \
                        f"Syne Tune is not installed ({e}); install it with `make peers`"
                    raise CliError(why) from None
                print(f"wrote {out} ({len(table.entries)} configurations, max_t "
                      f"{table.max_t})")
                return 0
            bench = Benchmark(table, a.lookup if a.query is not None else "nearest",
                              a.world, a.force_surrogate, a.model)
            if a.sample is not None:
                for c in bench.sample(a.sample, a.seed):
                    print(json.dumps(c))
                return 0
            print(json.dumps(bench.query(config, a.epoch)))
        except (TableError, QueryError) as e:
            raise CliError(str(e)) from None
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
