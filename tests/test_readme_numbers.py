"""The README's claim rows say what the shipped outputs say.

Every number of the two claim rows (and of the first screen's one-line verdicts) that has a
source among the shipped outputs is looked up there: a mean +- SD in the claim-1 references, an
improvement with its interval in the claim-1 report, a speedup with its interval, the seed
counts and the Holm-adjusted p in the claim-2 verdict. When a rerun changes an output, this
fails until the README is rebuilt from it.
"""

from __future__ import annotations

import re

import pytest

from mlpf.paths import ROOT

README = (ROOT / "README.md").read_text()
FIGS = ROOT / "paper_figures" / "small"
NUM = r"(\d+(?:\.\d+)?)"


def _row(starts: str) -> str:
    rows = [line for line in README.splitlines() if line.startswith(starts)]
    assert len(rows) == 1, starts
    return rows[0]


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _matches(value: str, candidates: list[float]) -> bool:
    """``value`` as printed equals one of ``candidates`` rounded to its printed digits."""
    d = _decimals(value)
    return any(abs(round(c, d) - float(value)) < 0.5 * 10 ** -d + 1e-12 for c in candidates)


CLAIM1 = _row("| Tuning cuts MLPF's validation loss")
CLAIM2 = _row("| ASHA + Bayesian optimisation gives")
FIRST = README.split("\n## The paper's claims here")[0]


def test_claim1_references_are_those_of_the_report():
    text = (FIGS / "claim1" / "references.md").read_text()
    pairs = [(float(m), float(s)) for m, s in re.findall(
        r"\| " + NUM + r" \+- " + NUM + r" \|", text)]
    found = re.findall(NUM + r" ± " + NUM, CLAIM1)
    assert len(found) >= 4, found
    for mean, sd in found:
        assert any(_matches(mean, [m]) and _matches(sd, [s]) for m, s in pairs), (mean, sd)


def test_claim1_improvements_are_those_of_the_report():
    text = (FIGS / "claim1" / "improvement.md").read_text()
    rows = re.findall(r"\| ([a-z_0-9]+) \| [^|]+\| ([+-]?\d+\.\d+)% \| \[([+-]?\d+\.\d+)%, "
                      r"([+-]?\d+\.\d+)%\]", text)
    triples = [sorted(abs(float(x)) for x in r[1:]) for r in rows]
    found = re.findall(NUM + r" % \[" + NUM + ", " + NUM + r"\]", CLAIM1)
    assert len(found) >= 3, found
    for t in found:
        assert sorted(float(x) for x in t) in triples, t
    # the first screen's one-liner: the study's configuration against both defaults
    best = [abs(float(r[1])) for r in rows if r[0] == "paper_best"]
    line = re.findall(NUM + r" % (?:below|above)", FIRST.split("2. *ASHA")[0])
    assert len(line) == 2 and all(_matches(v, best) for v in line), line


def _verdict_file():
    """The claim-2 verdict the README's row cites (its first ``.../claim2.md``): the
    pre-registered test's report on whichever table the row speaks of."""
    cited = re.findall(r"`(paper_figures/small/[\w/]+/claim2\.md)`", CLAIM2)
    assert cited, "the claim-2 row names no claim2.md"
    return ROOT / cited[0]


def _claim2_rows() -> list[dict]:
    text = _verdict_file().read_text()
    out = []
    for r in re.findall(r"^\| (\w+) \| (\w+) \| top (\d+) % \| [<>~]?([\d.]+) "
                        r"\[([\d.]+), ([\d.]+)\] "
                        r"\| (\d+) / (\d+) / (\d+) \| \d+ \| ([\d.e+-]+) \| ([a-z ]+) \|$",
                        text, flags=re.M):
        out.append({"flavour": r[0], "versus": r[1], "top": int(r[2]),
                    "speedup": tuple(r[3:6]), "faster": int(r[6]), "slower": int(r[7]),
                    "p": float(r[9]), "outcome": r[10]})
    return out


def _sensitivity_speedups() -> set[tuple[str, str, str]]:
    """The speedups [interval] of the sensitivity report the claim-2 row cites (its
    ``sensitivity.csv``), as printed there; none when the row cites none."""
    import pandas as pd

    cited = re.findall(r"`(paper_figures/small/[\w/]+)/sensitivity\.md`", CLAIM2)
    if not cited:
        return set()
    df = pd.read_csv(ROOT / cited[0] / "sensitivity.csv").dropna(subset=["speedup"])
    return {tuple(f"{x:.2f}" for x in r) for r in
            df[["speedup", "lo95", "hi95"]].itertuples(index=False)}


def test_claim2_speedups_counts_and_p_are_those_of_the_verdict():
    rows = _claim2_rows()
    flavours = re.findall(r"\*\*Verdict \((\w+)\): ", _verdict_file().read_text())
    assert flavours and len(rows) == 6 * len(flavours)  # 3 methods x 2 targets per flavour
    found = re.findall(NUM + r" \[" + NUM + ", " + NUM + r"\]", CLAIM2)
    assert len(found) >= 5, found
    known = {r["speedup"] for r in rows} | _sensitivity_speedups()
    for t in found:
        assert t in known, t
    for faster, slower in re.findall(r"(\d+) seeds faster, (\d+) slower", CLAIM2):
        assert (int(faster), int(slower)) in {(r["faster"], r["slower"]) for r in rows}
    for p in re.findall(r"Holm p " + NUM, CLAIM2):
        assert _matches(p, [r["p"] for r in rows]), p


def test_claim2_verdict_word_is_the_verdicts():
    text = _verdict_file().read_text()
    verdict = re.search(r"\*\*Verdict \(asha_bo\): (\w+)\.\*\*", text).group(1)
    assert f"**{verdict.capitalize()}** under the pre-registered test" in FIRST
    assert f"**{verdict.capitalize()} under the pre-registered test" in CLAIM2


@pytest.mark.parametrize("text", [CLAIM1, CLAIM2])
def test_the_rows_name_their_outputs(text):
    for path in re.findall(r"`(paper_figures/[^`]+\.md)`", text):
        assert (ROOT / path).is_file(), path


def test_the_table_status_is_its_data_cards():
    card = (ROOT / "results" / "small" / "DATACARD.md").read_text()
    m = re.search(r"^\*\*Status \([^)]*\): ([a-z ]+),\*\* (\d[\d,]*) of 1,024 sampled "
                  r"configurations done beside the default \((\d+) of them failed on their "
                  r"first training seed\), ([\d.]+) device-hours", README, flags=re.M)
    assert m, "the README's table status line"
    state, n, failed, hours = m.groups()
    assert f"| complete configurations | {n.replace(',', '')} sampled + " in card
    assert f"| failed trainings (first seed) | {failed}" in card
    assert f"| device-hours of the complete trainings | {hours} " in card
    complete = "| status | complete" in card  # running, or interrupted: in progress
    assert state == ("complete" if complete else "in progress")
