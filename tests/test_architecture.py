"""The import contract of ../shared/DESIGN.md, read from the source with ast.

- no import cycle among the project's modules (imports inside functions count too);
- no ``_private`` name imported from another file;
- the allowed arrows: mlpf/ knows nothing of HPO or analysis; analysis/ reads only the log
  schema of experiments/; campaign -> search -> driver; search -> backends; the driver never
  imports a backend; backends, peers and the table builder never import the driver, the
  search command or the campaign; nothing imports the campaign.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mlpf.paths import ROOT

PACKAGES = ("mlpf", "experiments", "analysis", "benchmarks")
# Leaf helpers any experiments module may use: flags, provenance, the log schema, DeepHyper,
# the local Ray cluster's loopback switch.
LEAVES = {"experiments.cli", "experiments.provenance", "experiments.logs",
          "experiments.dhcompat", "experiments.local_ray"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = p
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name belongs to (None: not the project's)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for every import of ``module``."""
    out = []
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = module.split(".")
                base = base[: len(base) - node.level + (MODULES[module].name == "__init__.py")]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module
            for a in node.names:
                sub = f"{src}.{a.name}"
                out.append((sub, None) if sub in MODULES else (src, a.name))
    return out


def _graph() -> dict[str, set[str]]:
    g = {m: set() for m in MODULES}
    for m in MODULES:
        for src, _ in _imports(m):
            t = _resolve(src)
            if t and t != m:
                g[m].add(t)
    return g


GRAPH = _graph()


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(v, path):
        state[v] = 1
        for w in sorted(GRAPH[v]):
            if state.get(w) == 1:
                cycles.append(" -> ".join(path[path.index(w):] + [w]))
            elif w not in state:
                visit(w, path + [w])
        state[v] = 2

    for v in sorted(GRAPH):
        if v not in state:
            visit(v, [v])
    assert not cycles, cycles


def test_no_private_name_imported_across_files():
    bad = [f"{m}: from {src} import {name}" for m in MODULES for src, name in _imports(m)
           if name and name.startswith("_") and not name.startswith("__")
           and _resolve(src) not in (None, m)]
    assert not bad, bad


def _edges(prefix: str):
    return [(m, t) for m in GRAPH if m == prefix or m.startswith(prefix + ".")
            for t in GRAPH[m]]


def test_mlpf_knows_nothing_of_hpo_or_analysis():
    bad = [e for e in _edges("mlpf") if not e[1].startswith("mlpf")]
    assert not bad, bad


def test_analysis_reads_only_the_log_schema_of_experiments():
    allowed = {"experiments.logs", "mlpf.paths", "mlpf.scales", "mlpf.cli"}
    bad = [e for e in _edges("analysis") if not e[1].startswith("analysis")
           and e[1] not in allowed]
    assert not bad, bad


def test_experiments_do_not_import_analysis():
    bad = [e for e in _edges("experiments") if e[1].startswith("analysis")]
    assert not bad, bad


@pytest.mark.parametrize("src,forbidden", [
    ("experiments.backends", ("experiments.driver", "experiments.search",
                              "experiments.campaign", "experiments.peers")),
    ("experiments.driver", ("experiments.backends", "experiments.search",
                            "experiments.campaign", "experiments.peers")),
    ("experiments.peers", ("experiments.driver", "experiments.search", "experiments.campaign",
                           "experiments.backends")),
    ("experiments.lctable", ("experiments.driver", "experiments.search",
                             "experiments.campaign", "experiments.backends",
                             "experiments.peers")),
    ("experiments.search", ("experiments.campaign", "experiments.peers")),
])
def test_forbidden_arrows(src, forbidden):
    bad = [e for e in _edges(src) if any(e[1] == f or e[1].startswith(f + ".")
                                         for f in forbidden)]
    assert not bad, bad


def test_nothing_imports_the_campaign():
    bad = [m for m in GRAPH if "experiments.campaign" in GRAPH[m]]
    assert not bad, bad


@pytest.mark.parametrize("module,allowed", [
    ("experiments.trial", {"experiments.schedulers"}),
    ("experiments.clock", set()),
    ("experiments.table", {"experiments.space"}),
])
def test_the_shared_pieces_depend_on_little(module, allowed):
    deps = {t for t in GRAPH[module] if t.startswith("experiments")} - LEAVES
    assert deps <= allowed, deps


def test_the_contract_sees_the_project():
    # the checks above would pass vacuously if the walk found nothing
    assert {"experiments.driver", "experiments.trial", "experiments.backends.replay",
            "mlpf.train", "analysis.logs"} <= set(MODULES)
    assert "experiments.driver" in GRAPH["experiments.search"]
    assert "experiments.trial" in GRAPH["experiments.backends.worker"]


def test_analysis_reads_the_log_schema_of_experiments():
    """The log schema is written once: analysis.logs imports experiments.logs, and every name
    the two share is the same value (no copy that could drift)."""
    import analysis.logs as reader
    import experiments.logs as schema

    assert ("experiments.logs", None) in _imports("analysis.logs") or any(
        m == "experiments.logs" for m, _ in _imports("analysis.logs"))
    shared = [n for n in vars(reader) if n.isupper() and n in vars(schema)]
    assert len(shared) >= 30, shared
    assert all(getattr(reader, n) is getattr(schema, n) for n in shared), [
        n for n in shared if getattr(reader, n) is not getattr(schema, n)]
    # no constant of the reader spells out, as a literal, a name or value the schema defines
    names = {v for n, v in vars(schema).items() if n.isupper() and isinstance(v, str)}
    literal = {}
    for node in ast.parse(MODULES["analysis.logs"].read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for t in node.targets:
                if isinstance(t, ast.Name) and t.id.isupper():
                    literal[t.id] = node.value.value
    # the tidy tables' own columns ("epochs" = epochs trained) are the reader's, not the logs'
    assert not {n: v for n, v in literal.items() if v in names and n != "N_EPOCHS"}, literal
