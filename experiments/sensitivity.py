"""Sensitivity of the claim-2 verdict: the pre-registered replays again, one thing changed
(analysis/preregistration.md, "Sensitivity").

    python -m experiments.sensitivity --scale small \\
        --table results/small/claim2/lctable.csv --seeds "$(seq -s ' ' 0 199)" \\
        --processes 2                                      # make claim2-sensitivity
    python -m experiments.sensitivity --scale small --table ... --dry-run   # the plan only
    python -m analysis.sensitivity --scale small \\
        --manifest results/small/claim2/sensitivity/scenarios.json   # the verdicts

Scenarios (:func:`plan`), each a replay campaign (``python -m experiments.campaign --backend
replay``) of :data:`METHODS` x seeds at the pre-registered device budget (32 median full
trainings of configurations 1..512, :func:`experiments.table.replay_budget`, the same in every
scenario: the budget is part of the design, not of the world):

| scenario        | table                             | world         | workers |
|-----------------|-----------------------------------|---------------|---------|
| ``primary``     | the table                         | primary       | 2       |
| ``without-<id>``| the table less configuration <id> | primary       | 2       |
| ``world-<name>``| the table                         | the other one | 2       |
| ``workers-8``   | the table                         | primary       | 8       |

Replay logs (``<method>/seed<k>/``): ``<table dir>/replay`` (primary, the folder of ``make
claim2``, whose world is ``<table dir>/lctable.csv``), ``<root>/without-<id>/claim2``,
``<table dir>/claim2-world-<name>``, ``<table dir>/claim2-workers8``; the root is ``<table
dir>/sensitivity`` unless ``--out``.

- The primary world is the one the surrogate's acceptance rule picks (``--lookup auto``:
  the surrogate when its validation report next to the table accepts it, else the nearest
  row); the other world is the other lookup. Every scenario names its lookup explicitly, so a
  reduced table (which has no validation report of its own) replays the same world.
- ``without-<id>``: one scenario per configuration in the table's top 1 %
  (:func:`top_configs`: sampled configurations whose first training reached max_t, final
  val_loss at or below the 1 % quantile of theirs). The reduced table is the table's CSV with
  every row of that configuration (all replicates) removed, cell for cell as recorded
  (:func:`write_without`), beside a copy of lctable.json that names the configuration left
  out and the source's sha256. It is kept (``<root>/without-<id>/lctable.csv``, root
  ``<table dir>/sensitivity``): :mod:`analysis.replay` reads the table next to a replay
  folder for the targets and checks its sha256, so the targets of that scenario are the
  quantiles of the reduced world.
- ``primary`` writes to the folder of ``make claim2``: the campaign skips searches already
  complete there on the same table, lookup and settings, so after ``make claim2`` only the
  other scenarios cost anything.
- In the nearest-row world a leave-out scenario replays only the searches in which some
  trial replayed the configuration left out; every other search would make the same
  decisions on the reduced table, and its primary logs are copied as that scenario's
  (:func:`derive_unaffected`, exact: the test replays both ways and compares the bytes;
  ``--no-derive`` replays them all).

Writes ``<root>/scenarios.json`` (the plan :mod:`analysis.sensitivity` reads) before running
anything; scenarios run one after another, each campaign with ``--processes`` searches at
once, and a rerun continues where an interrupted one stopped (complete searches are skipped).

Cost (``python benchmarks/bench_replay_cost.py``: CPU seconds of each method's search, 3 seeds,
on the shipped 257-configuration table at its budget of 3,700 device-s, on the 2-core VM;
extrapolated to 200 seeds): 0.61 core-hours per scenario in the nearest-row world, 0.51 in the
surrogate's, 0.65 with 8 workers (``asha_gp`` is 6.8 of the 11 CPU seconds per seed); with the
nearest row primary and 3 leave-outs, 3.0 core-hours after ``make claim2`` if every search
were replayed. Measured on the complete 1,024-configuration table (budget 2,700 device-s,
200 seeds, 2 processes on the 2-core VM): the surrogate world 1.23 core-hours (22 CPU-s per
seed, asha_gp 11.5 of them). Derived searches cost nothing: on the 257-configuration table
(10 seeds), 57, 51 and 27 of the 60 searches of its three leave-outs were derived, and their
campaigns took 260 s of wall time instead of about 580 s (the searches left are mostly those
of the Bayesian methods, which find the best configurations, and cost the most).
``--dry-run`` prints the plan and the number of searches.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import logs
from experiments.cli import (
    CliError,
    Parser,
    add_oversubscribe,
    add_scale,
    add_seeds,
    check_workers,
    positive_int,
    run_main,
)
from experiments.table import (
    CONFIG_ID,
    TABLE_CONFIG,
    Table,
    TableError,
    load_table,
    meta_path,
    replay_budget,
)

# The methods the verdict reads (analysis.claim2: its OTHERS and FLAVOURS; the default and the
# field's baselines are outside the decision and not replayed again here).
METHODS = ("random", "hyperband", "asha", "asha_bo", "asha_gp", "asha_tpe")
TOP_QUANTILE = 0.01  # configurations left out in turn: the table's top 1 %
WORKERS, MORE_WORKERS = 2, 8  # simulated workers: pre-registered, and the sensitivity
BUDGET_TRAININGS, BUDGET_FIRST = 32, 512  # the pre-registered replay budget
MANIFEST = "scenarios.json"
PRIMARY_RESULTS = "replay"  # next to the claim-2 world: where `make claim2` replays (CLAIM2_DIR)
LOOKUPS = ("nearest", "surrogate")  # experiments.surrogate.LOOKUPS


@dataclass(frozen=True)
class Scenario:
    """One replay campaign of the sensitivity analysis."""

    name: str  # primary | without-<id> | world-<lookup> | workers-8
    what: str  # one line for the report
    table: str  # the learning-curve table it replays
    lookup: str  # nearest | surrogate
    workers: int  # simulated workers per search
    results: str  # its replay logs: <method>/seed<k>/; the table lies in the folder above
    left_out: int | None = None  # the configuration removed from the table


# ------------------------------------------------------------------------------ the table
def final_losses(table: Table) -> dict[int, float]:
    """Final val_loss at max_t of every sampled configuration (id >= 1) whose first training
    reached max_t (replicate 0, as the pre-registered targets), by config id."""
    return {e.config_id: float(e.curve[table.max_t - 1][0]) for e in table.entries
            if e.config_id >= 1 and e.failure is None and len(e.curve) >= table.max_t
            and math.isfinite(float(e.curve[table.max_t - 1][0]))}


def top_configs(table: Table, quantile: float = TOP_QUANTILE) -> list[int]:
    """Config ids whose final loss is at or below the ``quantile`` quantile of the table's
    final losses (numpy's linear interpolation, as the targets), best first."""
    finals = final_losses(table)
    if not finals:
        raise TableError(f"{table.path}: no sampled configuration trained to max_t")
    cut = float(np.quantile(list(finals.values()), quantile))
    return sorted((c for c, v in finals.items() if v <= cut), key=lambda c: (finals[c], c))


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_without(src: Path, config_id: int, dest: Path) -> Path:
    """``src`` (a table CSV) less every row of configuration ``config_id``, to ``dest``, and
    its lctable.json with ``left_out`` and ``derived_from`` added. The other cells are
    written as read (text), so the reduced table differs from the source only by the rows
    removed; the same source gives the same bytes (and sha256) on every run."""
    import pandas as pd

    src, dest = Path(src), Path(dest)
    df = pd.read_csv(src, dtype=str, keep_default_na=False, on_bad_lines="skip")
    ids = pd.to_numeric(df[CONFIG_ID], errors="coerce")
    if not (ids == config_id).any():
        raise TableError(f"{src}: no configuration {config_id} to leave out")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".csv.tmp")
    df[ids != config_id].to_csv(tmp, index=False, lineterminator="\n")
    tmp.replace(dest)
    meta = json.loads(meta_path(src).read_text()) if meta_path(src).is_file() else {}
    meta.update(left_out=[int(config_id)],
                derived_from={"path": src.as_posix(), "sha256": _sha256(src)})
    meta_path(dest).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return dest


# ------------------------------------------------------------------------------ the plan
def primary_lookup(table: Table) -> str:
    """The pre-registered world: the surrogate when its validation accepts it, else the
    nearest row (what ``--lookup auto`` of the campaign picks)."""
    from experiments.surrogate import surrogate_accepted

    return "surrogate" if surrogate_accepted(table) else "nearest"


def plan(table: Table, root: Path, lookup: str, top: list[int]) -> list[Scenario]:
    """The scenarios, primary first (see the module docstring)."""
    path = Path(table.path)
    here = path.parent
    other = next(x for x in LOOKUPS if x != lookup)
    out = [Scenario("primary", f"pre-registered: {lookup} world, {WORKERS} workers",
                    path.as_posix(), lookup, WORKERS, (here / PRIMARY_RESULTS).as_posix())]
    for cid in top:
        folder = root / f"without-{cid}"
        out.append(Scenario(f"without-{cid}", f"configuration {cid} (top 1 %) left out",
                            (folder / path.name).as_posix(), lookup, WORKERS,
                            (folder / "claim2").as_posix(), cid))
    out.append(Scenario(f"world-{other}", f"the other world: {other}", path.as_posix(),
                        other, WORKERS, (here / f"claim2-world-{other}").as_posix()))
    out.append(Scenario(f"workers-{MORE_WORKERS}", f"{MORE_WORKERS} simulated workers",
                        path.as_posix(), lookup, MORE_WORKERS,
                        (here / f"claim2-workers{MORE_WORKERS}").as_posix()))
    return out


def campaign_argv(sc: Scenario, scale: str, seeds: list[int], device_budget: float,
                  processes: int, methods=METHODS, oversubscribe: bool = False) -> list[str]:
    """The replay campaign of one scenario (``python -m experiments.campaign`` arguments)."""
    return ["--backend", "replay", "--scale", scale, "--table", sc.table, "--lookup",
            sc.lookup, "--workers", str(sc.workers), "--methods", " ".join(methods),
            "--seeds", " ".join(map(str, seeds)), "--device-budget", f"{device_budget:g}",
            "--processes", str(processes), "--out", sc.results,
            *(["--allow-oversubscribe"] if oversubscribe else [])]


def _metadata(log_dir: Path) -> dict | None:
    """A search's metadata.json, None when it is missing or not readable JSON."""
    try:
        return logs.read_json(log_dir / logs.METADATA_JSON)
    except (ValueError, OSError):
        return None


def replayed_configs(log_dir: Path) -> set[int] | None:
    """The table configurations a complete replayed search of the nearest-row world replayed
    (results.csv ``m:table_config`` of every trial, including trials cut by the budget), or
    None when that cannot be told for sure: not complete, another world, a trial of
    learning_curves.csv missing from results.csv, an unreadable or damaged cell."""
    meta = _metadata(log_dir)
    if not isinstance(meta, dict) or meta.get("status") != logs.RUN_COMPLETE or \
            (meta.get("replay") or {}).get("lookup") != "nearest":
        return None
    col = logs.META_PREFIX + TABLE_CONFIG
    try:
        res = pd.read_csv(log_dir / logs.RESULTS_CSV, usecols=["job_id", col])
        curves = pd.read_csv(log_dir / logs.LEARNING_CURVES_CSV, usecols=["job_id"])
        ids = pd.to_numeric(res[col], errors="coerce")
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if ids.isna().any() or (ids != ids.round()).any() or \
            not set(curves["job_id"]) <= set(res["job_id"]):
        return None
    return {int(c) for c in ids}


def derive_unaffected(primary: Path, sc: Scenario, reduced: Table, methods, seeds
                      ) -> tuple[int, int]:
    """Searches of the primary scenario that never replayed the configuration ``sc`` leaves
    out, written under ``sc.results`` as that scenario's searches, instead of replaying them
    again. In the nearest-row world this is exact: the reduced table is the table less that
    configuration's rows, a configuration's coordinates come from the search space (checked:
    :attr:`Table.rows_set_the_scale` is empty), so every lookup that did not return the left-out
    configuration returns the same row (ties still go to the lowest id), and a search that
    never got it makes every decision, and writes every log line, as before; its
    results.csv and learning_curves.csv are copied byte for byte, and its metadata.json names
    the reduced table, with ``replay.derived_from`` (the primary's log folder and table
    sha256). Searches already complete in the scenario are left alone. The campaign then
    checks each copy as any complete search (method settings, design), so one made with
    another budget is replayed after all. Returns (searches derived, searches left to
    replay)."""
    if sc.left_out is None or sc.lookup != "nearest" or reduced.rows_set_the_scale:
        return 0, len(methods) * len(seeds)
    summary = None
    derived = left = 0
    for method in methods:
        for seed in seeds:
            src, dst = primary / method / f"seed{seed}", Path(sc.results) / method / f"seed{seed}"
            have = _metadata(dst)
            if isinstance(have, dict) and have.get("status") == logs.RUN_COMPLETE:
                continue  # the campaign checks it like any other
            configs = replayed_configs(src)
            if configs is None or sc.left_out in configs:
                left += 1
                continue
            meta = logs.read_json(src / logs.METADATA_JSON)
            if summary is None:
                summary = reduced.summary()
            done = meta["replay"]
            meta["replay"] = {**summary, "clock": done.get("clock"),
                              "real_start_iso": done.get("real_start_iso"),
                              "real_seconds": done.get("real_seconds"),
                              "derived_from": {"log_dir": src.as_posix(),
                                               "sha256": done.get("sha256"),
                                               "left_out": sc.left_out}}
            logs.copy_logs(src, dst, meta)
            derived += 1
    return derived, left


def select(scenarios: list[Scenario], only: str | None) -> list[Scenario]:
    """``only``: comma-separated names or kinds (``primary``, ``without``, ``world``,
    ``workers``); None: all."""
    if not only:
        return scenarios
    want = {w.strip() for w in only.split(",") if w.strip()}
    picked = [s for s in scenarios if s.name in want or s.name.split("-")[0] in want]
    if not picked:
        raise CliError(f"--only {only}: no such scenario; choose from "
                       f"{', '.join(s.name for s in scenarios)}")
    return picked


# ------------------------------------------------------------------------------ CLI
def build_parser() -> Parser:
    p = Parser("python -m experiments.sensitivity", __doc__)
    add_scale(p)
    p.add_argument("--table", required=True, help="the learning-curve table of the claim-2 "
                   "test (make claim2's world: results/<scale>/claim2/lctable.csv)")
    add_seeds(p)
    p.add_argument("--processes", type=positive_int, default=2, help="searches at once")
    add_oversubscribe(p)
    p.add_argument("--out", default=None,
                   help="root of the reduced tables and the plan (default <table dir>/"
                   "sensitivity)")
    p.add_argument("--only", default=None, help="comma-separated scenarios or kinds: "
                   "primary, without, world, workers (default: all)")
    p.add_argument("--no-derive", action="store_true",
                   help="replay every search of a leave-out scenario, also those that are "
                   "the primary's searches (see derive_unaffected)")
    p.add_argument("--dry-run", action="store_true",
                   help="write the plan and the reduced tables, print the campaigns, run none")
    return p


def main(argv=None) -> int:
    def body() -> int:
        a = build_parser().parse_args(argv)
        check_workers(a.processes, "--processes", allow=a.allow_oversubscribe)
        try:
            table = load_table(Path(a.table), a.scale)
            budget = replay_budget(table, BUDGET_TRAININGS, BUDGET_FIRST)
            top = top_configs(table)
        except TableError as e:
            raise CliError(str(e)) from None
        root = Path(a.out) if a.out else Path(a.table).parent / "sensitivity"
        lookup = primary_lookup(table)
        scenarios = plan(table, root, lookup, top)
        root.mkdir(parents=True, exist_ok=True)
        manifest = {"scale": a.scale, "table": Path(a.table).as_posix(),
                    "table_sha256": table.sha256, "primary_lookup": lookup,
                    "device_budget_s": budget, "methods": list(METHODS),
                    "seeds": list(a.seeds), "top_quantile": TOP_QUANTILE,
                    "top_configs": top, "scenarios": [asdict(s) for s in scenarios]}
        (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        todo = select(scenarios, a.only)
        for sc in todo:
            if sc.left_out is not None:
                write_without(Path(a.table), sc.left_out, Path(sc.table))
        n = len(todo) * len(METHODS) * len(a.seeds)
        print(f"sensitivity {a.scale}: {len(todo)} scenarios x {len(METHODS)} methods x "
              f"{len(a.seeds)} seeds = {n} searches (complete ones skipped), device budget "
              f"{budget:g} s, primary world {lookup}; plan {root / MANIFEST}", file=sys.stderr)
        failed = []
        primary = Path(scenarios[0].results)
        for i, sc in enumerate(todo, 1):
            cmd = [sys.executable, "-m", "experiments.campaign",
                   *campaign_argv(sc, a.scale, a.seeds, budget, a.processes,
                                  oversubscribe=a.allow_oversubscribe)]
            print(f"[{i}/{len(todo)}] {sc.name}: {sc.what}", file=sys.stderr, flush=True)
            if a.dry_run:
                print(" ".join(f"'{c}'" if " " in c else c for c in cmd))
                continue
            if sc.left_out is not None and sc.lookup == "nearest" and not a.no_derive:
                try:
                    reduced = load_table(Path(sc.table), a.scale)
                except TableError as e:
                    raise CliError(str(e)) from None
                n, rest = derive_unaffected(primary, sc, reduced, METHODS, a.seeds)
                print(f"  {n} searches as in {scenarios[0].name} (none of their trials "
                      f"replayed configuration {sc.left_out}); {rest} to replay",
                      file=sys.stderr, flush=True)
            if subprocess.run(cmd).returncode != 0:
                failed.append(sc.name)
        if failed:
            print(f"error: campaigns failed: {', '.join(failed)} (rerun to resume)",
                  file=sys.stderr)
            return 1
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
