"""Run every method x seed of a study: live searches, replayed searches and peers.

    python -m experiments.campaign --backend live --scale smoke            # make benchmark
    python -m experiments.campaign --backend live --scale small --methods "random asha" \\
        --seeds "0 1 2" --workers 2 --evaluator mpi                        # mpiexec -n 3 each
    python -m experiments.campaign --backend replay --scale small --seeds "0 1 2" \\
        --processes 2                                                      # make replay

live: each search runs as its own process (``python -m experiments.search``; under ``mpiexec
-n WORKERS+1`` for ``--evaluator mpi``, with ``MPIR_CVAR_NOLOCAL=1`` which MPICH needs on a
single node); the untuned default is trained first for every seed (it is what the analysis
measures improvement against). A search whose ``metadata.json`` says ``complete`` is skipped;
an interrupted one is resumed from its logs; so rerunning after a crash or a walltime limit
continues the campaign. SIGTERM/SIGINT are passed on to the running searches. SIGUSR1 to the
campaign's own process drains it: the running searches finish, no new one starts, exit 75
(:data:`DRAINED`); rerunning continues with the next search, so a campaign can be paused
between searches rather than in one (a resumed search is not the search that never stopped).

replay: our methods (:mod:`experiments.backends.replay`) and the peers
(:mod:`experiments.peers`) on a learning-curve table, in simulated time, in ``--processes``
processes; a search complete on the same table (sha256) and lookup is skipped, any other
starts again; with ``--reuse DIR`` such a search complete under DIR (another campaign's
root) is copied instead of replayed. ``--lookup``: ``nearest`` (every trial replays the
nearest table row), ``surrogate`` (:mod:`experiments.surrogate`: any configuration, seed
``k`` replays world ``k`` of the surrogate, the same for every method: common random
numbers), ``auto`` (default: the surrogate when its validation report on this table accepts
it, else nearest).

``--processes`` searches run at once (live: they share the machine's cores, so ``--processes``
x ``--workers`` is capped by them, as ``--processes`` is for replays; ``--allow-oversubscribe``
lifts the cap; under ``--evaluator mpi`` the ranks are the launcher's).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from experiments import driver, logs, search
from experiments.backends.live import EVALUATORS
from experiments.backends.replay import replay_dir
from experiments.cli import (
    CliError,
    Parser,
    add_budget,
    add_scale,
    add_seeds,
    add_workers,
    check_simulated_workers,
    check_workers,
    duration,
    positive_int,
    run_main,
)
from experiments.methods import (
    METHODS,
    PAPER_METHODS,
    get_method,
    method_metadata,
    replay_device_budget,
    settings_for,
)
from experiments.peers import PEERS, run_peer
from experiments.peers.simulate import synthetic_curves, table_curves
from experiments.procs import stopped_with_parent
from experiments.surrogate import (
    LOOKUPS,
    Surrogate,
    open_lookup,
    surrogate_accepted,
    write_reference,
)
from experiments.table import TableError
from experiments.trainables import get_trainable

# Longest first, so that parallel processes finish together: model-based proposals cost most.
COST_ORDER = ("asha_bo", "bo", "bohb", "async_hyperband", "asha", "asha_deephyper",
              "hyperband", "random", "default")


# ------------------------------------------------------------------------------ live
def wanted_design(name: str, scale: str, budget=None, time_budget=None,
                  device_budget=None) -> dict:
    """The design (:data:`experiments.logs.DESIGN_KEYS`) a search of ``name`` (a method or a
    peer) records with these budgets."""
    s = settings_for(scale, budget, time_budget, device_budget)
    try:
        return driver.design(name, s)
    except ValueError:  # a peer: the settings as they are
        return {k: getattr(s, k) for k in logs.DESIGN_KEYS}


def _plain(obj):
    """``obj`` as JSON would give it back (tuples as lists), for comparing with a log."""
    return json.loads(json.dumps(obj, default=str))


def replay_outdated(name: str, meta: dict, summary: dict, settings,
                    workers: int) -> str | None:
    """Why a complete replay recorded in ``meta`` is not the one asked for now, or None:
    another table (sha256) or lookup, another surrogate or noise model, another number of
    simulated ``workers``, another design, or (our methods) other method
    settings, e.g. the acquisition samples of CBO."""
    done = meta.get("replay") or {}
    if meta.get(logs.MD_WORKERS) != workers:
        return f"{meta.get(logs.MD_WORKERS)} workers, not {workers}"
    if done.get("sha256") != summary.get("sha256"):
        return "another table"
    if done.get("lookup", "nearest") != summary.get("lookup", "nearest"):
        return "another lookup"

    def model(d):
        return {k: v for k, v in (d.get("surrogate") or {}).items() if k != "validation"}
    if _plain(model(done)) != _plain(model(summary)):
        return "another surrogate"
    if name in METHODS:
        want = {k: v for k, v in method_metadata(name, settings).items() if k != "config"}
        have = {k: v for k, v in (meta.get("method_settings") or {}).items() if k != "config"}
        if _plain(want) != _plain(have):
            return "other method settings"
    return logs.design_difference(meta, wanted_design(name, settings.scale, settings.budget,
                                                      settings.time_budget or 0,
                                                      settings.device_budget))


def other_designs(folders: list[tuple[str, Path]], want, loss: str | None = None) -> list[str]:
    """``folder (what differs)`` for each (name, folder) whose metadata.json records a search
    of another design than ``want(name)``, or (with ``loss``) made with another loss."""
    out = []
    for name, folder in folders:
        path = folder / logs.METADATA_JSON
        try:
            meta = logs.read_json(path)
        except (ValueError, OSError) as e:
            raise CliError(f"{path} is not readable JSON ({e.__class__.__name__}); move it "
                           "aside to resume from the CSV logs") from None
        diff = meta is not None and logs.design_difference(meta, want(name))
        if meta is not None and not diff and loss is not None:
            have = (meta.get(logs.LOSS) or {}).get("name") if isinstance(meta, dict) else None
            if have != loss:
                diff = f"loss {have or 'not recorded'}, not {loss}"
        if diff:
            out.append(f"{folder} ({diff})")
    return out


@dataclass
class Child:
    """A live search running as a subprocess of the campaign."""

    method: str
    seed: int
    process: subprocess.Popen
    started: float  # time.time() when it started
    log_dir: Path


@dataclass
class Ended:
    """How one search of the campaign ended: its status in words and its wall seconds."""

    method: str
    seed: int
    status: str
    wall: float


DRAINED = 75  # exit code of a drained live campaign (EX_TEMPFAIL: rerun to continue)


def run_live(a) -> int:
    """Live searches as subprocesses, ``a.processes`` at a time."""
    from mlpf.paths import results_dir

    jobs = [("default", s) for s in a.seeds if "default" not in a.methods] + \
        [(m, s) for s in a.seeds for m in a.methods]
    running: list[Child] = []
    stop = {"signal": None, "drain": False}

    def on_signal(signum, frame):  # pass SIGTERM/SIGINT on to the running searches, then stop
        stop["signal"] = signum
        for r in running:
            if r.process.poll() is None:
                r.process.send_signal(signum)

    def on_drain(signum, frame):  # SIGUSR1: let the running searches finish, start no more
        if not stop["drain"]:
            stop["drain"] = True
            print(f"== SIGUSR1: draining; {len(running)} running search(es) finish, no new one "
                  "starts", file=sys.stderr, flush=True)

    folders = [(m, Path(a.out) / m / f"seed{s}" if a.out else results_dir(a.scale, m, s))
               for m, s in jobs]
    stale = other_designs(folders, lambda m: wanted_design(
        m, a.scale, a.budget, a.time_budget, a.device_budget),
        loss=get_trainable(a.trainable).loss_spec(a.scale).get("name"))
    if stale:
        more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
        raise CliError(f"a search of another design in {stale[0]}{more}: move "
                       f"{'them' if more else 'it'} aside (e.g. to results/{a.scale}/archive/) "
                       "or pass --out")
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    old[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, on_drain)
    summary: list[Ended] = []
    t_all = time.time()

    def wait_one() -> None:
        """Wait until one running search ends and note how it ended."""
        while True:
            for r in running:
                rc = r.process.poll()
                if rc is not None:
                    running.remove(r)
                    end = Ended(r.method, r.seed, how_it_ended(rc, r.log_dir),
                                time.time() - r.started)
                    summary.append(end)
                    ran = [e.wall for e in summary if not e.status.startswith("skipped")]
                    left = len(jobs) - len(summary) + len(running)
                    eta = (sum(ran) / len(ran)) * left / max(1, a.processes)
                    print(f"== [{len(summary)}/{len(jobs)}] {r.method} seed{r.seed}: "
                          f"{end.status} in {duration(end.wall)}; campaign "
                          f"elapsed {duration(time.time() - t_all)}, ETA {duration(eta)}",
                          file=sys.stderr, flush=True)
                    return
            time.sleep(0.2)

    try:
        # the default must be complete before the methods of its seed start
        for method, seed in jobs:
            if stop["signal"] or stop["drain"]:
                break
            out = Path(a.out) / method / f"seed{seed}" if a.out else \
                results_dir(a.scale, method, seed)
            meta = logs.read_json(out / logs.METADATA_JSON)
            if meta and meta.get("status") == logs.RUN_COMPLETE:
                summary.append(Ended(method, seed, "skipped (complete)", 0.0))
                continue
            while running and (method == "default" or len(running) >= a.processes):
                wait_one()
            if stop["signal"] or stop["drain"]:
                break
            resume = meta is not None or (out / logs.RESULTS_CSV).exists()
            workers = 1 if method == "default" else a.workers
            cmd, env = search.search_command(
                method, a.scale, seed, workers=workers, evaluator=a.evaluator,
                trainable=a.trainable, resume=resume, budget=a.budget,
                out=out if a.out else None, time_budget=a.time_budget,
                device_budget=a.device_budget, oversubscribe=a.allow_oversubscribe)
            print(f"== {method} seed{seed}{' (resume)' if resume else ''}: {' '.join(cmd)}",
                  file=sys.stderr, flush=True)
            # the search gets SIGTERM if the campaign dies, even by SIGKILL: it ends interrupted
            proc = subprocess.Popen(cmd, env=env, preexec_fn=stopped_with_parent())
            running.append(Child(method, seed, proc, time.time(), out))
            while method == "default" and running:
                wait_one()
        while running:
            wait_one()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    ended = {(e.method, e.seed) for e in summary}
    not_started = still_to_run([f for job, (_, f) in zip(jobs, folders) if job not in ended])
    how = ", interrupted" if stop["signal"] else \
        f", drained: {not_started} not started" if stop["drain"] and not_started else ""
    print(f"\ncampaign live {a.scale} ({a.evaluator}, {a.workers} workers, "
          f"{duration(time.time() - t_all)}{how}):", file=sys.stderr)
    for e in summary:
        print(f"  {e.method:16s} seed{e.seed}  {e.status:44s} {duration(e.wall):>8s}",
              file=sys.stderr)
    if stop["signal"]:
        return 128 + stop["signal"]
    if stop["drain"] and not_started:
        print(f"drained: {not_started} search(es) not started; the same command continues "
              "with them", file=sys.stderr)
        return DRAINED
    return 0 if all(e.status.startswith(("complete", "skipped")) for e in summary) else 1


def still_to_run(folders: list[Path]) -> int:
    """How many of the searches in ``folders`` a rerun of the campaign starts: those whose
    metadata.json does not say complete (a rerun skips the complete ones)."""
    def complete(folder: Path) -> bool:
        try:
            meta = logs.read_json(folder / logs.METADATA_JSON)
        except (OSError, ValueError):  # unreadable: the rerun says what is wrong with it
            return False
        return isinstance(meta, dict) and meta.get("status") == logs.RUN_COMPLETE

    return sum(1 for f in folders if not complete(f))


def how_it_ended(rc: int, log_dir: Path) -> str:
    """A finished search in words: its status and what stopped it (metadata.json)."""
    meta = logs.read_json(log_dir / logs.METADATA_JSON) or {}
    status = meta.get("status") or "no metadata"
    why = meta.get("stopped_by")
    text = status + (f", stopped by {why}" if why else "")
    if why == "time":
        text += " (wall-time safety cap)"
    return text if rc == 0 else f"exit {rc}: {text}"


# ------------------------------------------------------------------------------ replay
_SIM: dict = {}  # what every simulated search shares, set before the pool forks


def _outcome(meta: dict, log_dir: Path) -> dict:
    best = None
    res = logs.read_results(log_dir)
    if res is not None and "m:best_val_loss" in res.columns:
        v = res["m:best_val_loss"].astype(float).min()
        best = None if math.isnan(v) else float(v)
    return {"trials": meta.get("n_trials"), "epochs": meta.get("epochs_trained"),
            "simulated": meta.get("end_time"), "best": best}


def reuse_search(src: Path, dest: Path, name: str, summary: dict, settings,
                 workers: int) -> dict | None:
    """Copy the complete replayed search in ``src`` to ``dest`` when it is the search asked
    for: the check that skips a complete search in ``dest`` (:func:`replay_outdated`: the
    same table sha256, lookup, surrogate, workers, method settings and design), which makes the same
    logs (a replay is deterministic). results.csv and learning_curves.csv are copied as they
    are, then metadata.json with ``replay.reused_from`` (``src``), written last. Returns the
    metadata, or None (nothing written) when ``src`` holds no such search."""
    if src.resolve() == dest.resolve():
        return None
    try:
        meta = logs.read_json(src / logs.METADATA_JSON)
    except (ValueError, OSError):
        return None
    if not isinstance(meta, dict) or meta.get("status") != logs.RUN_COMPLETE or \
            replay_outdated(name, meta, summary, settings, workers) or not all(
                (src / f).is_file() for f in (logs.RESULTS_CSV, logs.LEARNING_CURVES_CSV)):
        return None
    meta["replay"] = {**meta["replay"], "reused_from": src.as_posix()}
    logs.copy_logs(src, dest, meta)
    return meta


def simulate_one(task: tuple[str, int]) -> dict:
    """Replay one (method or peer, seed) unless it is complete on the same table."""
    name, seed = task
    c = _SIM
    log_dir = Path(c["out"]) / name / f"seed{seed}" if c["out"] else \
        replay_dir(c["scale"], name, seed)
    row = {"method": name, "seed": seed, "status": logs.RUN_COMPLETE, "real": 0.0}
    settings = settings_for(c["scale"], c["budget"], c["time_budget"] or 0, c["device_budget"])
    meta = logs.read_json(log_dir / logs.METADATA_JSON)
    if meta and meta.get("status") == logs.RUN_COMPLETE and not replay_outdated(
            name, meta, c["summary"], settings, c["workers"]):
        return {**row, "status": "skipped (complete)", **_outcome(meta, log_dir)}
    for other in c["reuse"]:
        meta = reuse_search(Path(other) / name / f"seed{seed}", log_dir, name, c["summary"],
                            settings, c["workers"])
        if meta is not None:
            return {**row, "status": "skipped (reused)", **_outcome(meta, log_dir)}
    logs.clear_logs(log_dir)
    t0, cpu0 = time.perf_counter(), time.process_time()
    table, curves, summary = c["table"], c["curves"], c["summary"]
    if isinstance(table, Surrogate):  # world <seed>: the same for every method
        table = table.world(seed)
        curves, summary = table_curves(table), table.summary()
    try:
        if name in PEERS:
            run_peer(name, c["scale"], seed, curves, log_dir, workers=c["workers"],
                     table=summary, budget=c["budget"], time_budget=c["time_budget"],
                     devices=c["devices"], device_budget=c["device_budget"],
                     loss=(getattr(table, "meta", None) or {}).get(logs.LOSS))
        else:
            search.replay(name, c["scale"], seed, table, c["workers"], log_dir,
                          c["budget"], c["time_budget"], progress=False,
                          device_budget=c["device_budget"])
    except Exception as e:  # noqa: BLE001 - one broken search must not end the campaign
        return {**row, "status": f"error: {type(e).__name__}: {e}",
                "real": time.perf_counter() - t0, "cpu": time.process_time() - cpu0}
    meta = logs.read_json(log_dir / logs.METADATA_JSON) or {}
    row.update(status=meta.get("status", "no metadata"), real=time.perf_counter() - t0,
               cpu=time.process_time() - cpu0)
    return {**row, **_outcome(meta, log_dir)}


def _share_cores(processes: int) -> None:
    """In a replay process: native thread pools (BLAS, OpenMP: the GP's and the forests'
    linear algebra) to this process's share of the cores, so that ``processes`` searches do not
    oversubscribe them."""
    from threadpoolctl import threadpool_limits

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threadpool_limits(max(1, (cores or 1) // processes))


def run_replay(a) -> int:
    """Our methods and the peers on a table, ``a.processes`` searches at a time."""
    if a.table == "synthetic":  # peers only: no table, synthetic curves
        if set(a.methods) - set(PEERS):
            raise CliError("--table synthetic replays peers only")
        table, curves = None, synthetic_curves(settings_for(a.scale).max_t)
        summary, devices = {"path": "synthetic", "sha256": None, "trainable": "synthetic"}, 1
    else:
        table = search.open_table(a.table, a.scale)
        if table.max_t < settings_for(a.scale).max_t:
            raise CliError(f"{table.path} records {table.max_t} epochs, fewer than max_t="
                           f"{settings_for(a.scale).max_t} of scale {a.scale}")
        table.heldout_error()  # computed once, before the processes fork
        curves, summary, devices = table_curves(table), table.summary(), table.devices
        explicit = a.lookup == "surrogate"
        if a.lookup == "auto":
            a.lookup = "surrogate" if surrogate_accepted(table) else "nearest"
        elif explicit and not surrogate_accepted(table):
            print(f"warning: the surrogate of {table.path} is not accepted by its validation "
                  "(python -m experiments.surrogate); replaying on it anyway", file=sys.stderr)
        try:  # fitted once, before the processes fork
            table = open_lookup(table, a.lookup, force=explicit)
        except TableError as e:
            raise CliError(str(e)) from None
        if isinstance(table, Surrogate):
            summary = table.world(0).summary()  # the lookup, for the skip check
            root = Path(a.out) if a.out else replay_dir(a.scale, "-", 0).parent.parent
            print(f"reference sample of the surrogate: {write_reference(table, root)}",
                  file=sys.stderr, flush=True)
    a.device_budget = replay_device_budget(a.scale, a.device_budget)
    _SIM.update(scale=a.scale, table=table, curves=curves, summary=summary, devices=devices,
                workers=a.workers, out=a.out, budget=a.budget, time_budget=a.time_budget,
                device_budget=a.device_budget, reuse=a.reuse or [])
    order = {m: i for i, m in enumerate(COST_ORDER)}
    tasks = sorted(((m, s) for m in a.methods for s in a.seeds),
                   key=lambda t: (order.get(t[0], len(order)), t[1]))
    print(f"campaign replay {a.scale}: {len(a.methods)} methods x {len(a.seeds)} seeds on "
          f"{summary['path']} ({summary.get('lookup', 'curves')}), {a.processes} processes",
          file=sys.stderr, flush=True)
    rows: list[dict] = []
    t0 = time.perf_counter()

    def show(r):
        rows.append(r)
        best = f"{r['best']:.4f}" if isinstance(r.get("best"), float) else "-"
        sim = f"{r['simulated']:.4g}" if isinstance(r.get("simulated"), (int, float)) else "-"
        elapsed = time.perf_counter() - t0
        eta = elapsed / len(rows) * (len(tasks) - len(rows))
        print(f"[{len(rows):4d}/{len(tasks)}] {r['method']:17s} seed{r['seed']:<3d} "
              f"{r['status']:18s} trials {r.get('trials') or 0:4d}  epochs "
              f"{r.get('epochs') or 0:5d}  simulated {sim:>6s} s  best {best}  "
              f"({r['real']:.1f} s; elapsed {duration(elapsed)}, ETA {duration(eta)})",
              file=sys.stderr, flush=True)

    if a.processes <= 1:
        for t in tasks:
            show(simulate_one(t))
    else:
        with mp.get_context("fork").Pool(a.processes, initializer=_share_cores,
                                         initargs=(a.processes,)) as pool:
            for r in pool.imap_unordered(simulate_one, tasks):
                show(r)
    ran = [r for r in rows if r["status"] == logs.RUN_COMPLETE]
    skipped = sum(r["status"].startswith("skipped") for r in rows)
    reused = sum(r["status"] == "skipped (reused)" for r in rows)
    print(f"campaign replay {a.scale}: {len(ran)} searches run, {skipped} skipped"
          f"{f' ({reused} reused)' if reused else ''}, "
          f"{len(rows) - len(ran) - skipped} failed, {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    for m in a.methods:
        secs = [r["real"] for r in ran if r["method"] == m]
        cpu = [r["cpu"] for r in ran if r["method"] == m]
        if secs:
            print(f"  {m:17s} {sum(secs) / len(secs):6.2f} s per search (max {max(secs):.2f}), "
                  f"CPU {sum(cpu) / len(cpu):.2f} s", file=sys.stderr)
    return 0 if len(ran) + skipped == len(rows) else 1


# ------------------------------------------------------------------------------ CLI
def build_parser() -> Parser:
    p = Parser("python -m experiments.campaign", __doc__)
    p.add_argument("--backend", default="live", choices=("live", "replay"),
                   help="live: train (subprocesses); replay: simulated time on a table")
    add_scale(p)
    p.add_argument("--methods", default=None,
                   help="methods and peers (default live: the paper's four; replay: every "
                   f"method and peer); any of: {' '.join([*METHODS, *PEERS])}")
    add_seeds(p)
    add_workers(p, "workers per search (replay: simulated)")
    p.add_argument("--processes", type=positive_int, default=None,
                   help="searches at once (default live 1, replay 2)")
    p.add_argument("--evaluator", default="process", choices=EVALUATORS,
                   help="live: " + " | ".join(EVALUATORS))
    p.add_argument("--trainable", default="mlpf", help="live: mlpf | synthetic")
    p.add_argument("--table", default=None, help="replay: the learning-curve table (default "
                   "results/<scale>/lctable.csv; 'synthetic' for peers on synthetic curves)")
    p.add_argument("--lookup", default="auto", choices=("auto", *LOOKUPS),
                   help="replay: nearest table row, the validated surrogate, or auto "
                   "(surrogate if accepted)")
    add_budget(p, "the scale's; replay: none")
    p.add_argument("--out", default=None,
                   help="root of <method>/seed<k>/ (default results/<scale>[/replay])")
    p.add_argument("--reuse", action="append", default=None, metavar="DIR",
                   help="replay: another root of <method>/seed<k>/; a search complete there "
                   "with the same table, lookup, settings and design is copied instead of "
                   "replayed (repeatable)")
    return p


def main(argv=None) -> int:
    def body() -> int:
        a = build_parser().parse_args(argv)
        replay = a.backend == "replay"
        a.processes = a.processes or (2 if replay else 1)
        if replay:
            check_simulated_workers(a.workers)
            check_workers(a.processes, "--processes", allow=a.allow_oversubscribe)
        elif search.workers_here(a.evaluator):
            both = a.processes > 1
            check_workers(a.processes * a.workers,
                          f"--processes {a.processes} x --workers {a.workers} =" if both
                          else "--workers",
                          allow=a.allow_oversubscribe)
        else:  # mpi: each search's ranks are the launcher's; the searches are ours
            check_workers(a.processes, "--processes", allow=a.allow_oversubscribe)
        default = [*METHODS, *PEERS] if replay else list(PAPER_METHODS)
        a.methods = a.methods.split() if a.methods else default
        try:
            settings_for(a.scale)
            for m in a.methods:
                if not replay and m.startswith("ray_"):  # Ray Tune peers run live only
                    from experiments.peers.ray_tune import check_peer

                    check_peer(m)
                elif not (replay and m in PEERS):
                    get_method(m)
            if not replay:
                get_trainable(a.trainable).check_ready(a.scale)
        except (ValueError, FileNotFoundError) as e:
            raise CliError(str(e)) from None
        return run_replay(a) if replay else run_live(a)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
