"""Rebuild every table and figure of one scale from the raw HPO logs alone.

    python -m analysis.make_figures --scale small
    python -m analysis.make_figures --scale smoke --results results --out paper_figures

Writes to <out>/<scale>/: summary.{md,tex,csv}, fractions.{md,tex}, targets.{md,tex}
(analysis.tables), best_configs.{md,tex,csv}, per_seed.csv, trials.csv, incumbent.csv
(every search's incumbent over compute), references.json (L_ref, targets, default loss), one
PDF + PNG per figure in analysis.figures.FIGURES, and physics.{md,tex,pdf,png} when
`python -m analysis.physics` has left its trainer outputs there. Exit 2 with a one-line
message when there are no logs; incomplete logs give warnings on stderr. L_ref and the targets
come from the scale's learning-curve table (results/<scale>/lctable.csv) when there is one
(analysis.metrics).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analysis import figures, physics, tables
from analysis.logs import (
    DEFAULT_METHOD,
    LCTABLE_CSV,
    MissingLogsError,
    load_scale,
    table_for,
    tidy,
    warn,
    warnings_to_stderr,
)
from analysis.metrics import incumbent_table, per_seed_metrics, reference_losses, summarize
from analysis.summary_plots import PAPER_METHODS  # the four the paper compares
from mlpf.paths import FIGURES_DIR, RESULTS_DIR
from mlpf.scales import SCALES


def build(scale: str, results: Path = RESULTS_DIR, out: Path = FIGURES_DIR,
          default_ref: str = "final", table: Path | None = None) -> list[Path]:
    """Logs under results/<scale>/ -> files under out/<scale>/; returns the files written.
    ``table``: the learning-curve table for L_ref and the targets (default
    results/<scale>/lctable.csv). Raises MissingLogsError when there is no search log."""
    runs = load_scale(Path(results) / scale)
    missing = [m for m in PAPER_METHODS if m not in runs]
    if missing:
        warn(f"{Path(results) / scale}: no logs of {', '.join(missing)}; those rows are absent")
    if DEFAULT_METHOD not in runs:
        warn(f"{Path(results) / scale / DEFAULT_METHOD}: missing, so there is no reference "
             f"loss; the improvement columns are left empty")
    out = Path(out) / scale
    out.mkdir(parents=True, exist_ok=True)
    trials, _ = tidy(runs)
    table = Path(table) if table else Path(results) / scale / LCTABLE_CSV
    finals, name = table_for(runs, table)
    refs = reference_losses(runs, trials, finals, table_name=name)
    per_seed, refs = per_seed_metrics(runs, trials, refs, default_ref=default_ref)
    summary = summarize(per_seed)

    written = tables.write_summary(summary, refs, scale, out)
    tables.write_best_configs(trials, out)
    tables.write_csv(per_seed, out / "per_seed.csv")
    tables.write_csv(trials, out / "trials.csv")
    tables.write_csv(incumbent_table(runs, trials), out / "incumbent.csv")
    (out / "references.json").write_text(json.dumps(tables.jsonable(refs), indent=1,
                                                    sort_keys=True) + "\n")
    written += [out / f"best_configs.{e}" for e in ("md", "tex", "csv")]
    written += [out / n for n in ("per_seed.csv", "trials.csv", "incumbent.csv",
                                  "references.json")]
    for name, make in figures.FIGURES.items():
        written += figures.save(make(runs, trials, refs), out, name)
    written += physics.render(out)  # only if analysis.physics has run
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", required=True, choices=tuple(SCALES), help="smoke | small | paper")
    ap.add_argument("--results", type=Path, default=RESULTS_DIR, help="root of the raw logs")
    ap.add_argument("--out", type=Path, default=FIGURES_DIR, help="root of the outputs")
    ap.add_argument("--default-ref", choices=("final", "best"), default="final",
                    help="the default configuration's final or best val loss as reference")
    ap.add_argument("--table", type=Path, default=None,
                    help="learning-curve table for L_ref and the targets "
                         "(default <results>/<scale>/lctable.csv)")
    args = ap.parse_args(argv)
    if args.table is not None and not args.table.is_file():
        print(f"error: {args.table}: no learning-curve table there (pass --table the "
              "lctable.csv of the searches' design)", file=sys.stderr)
        return 2
    target = args.out / args.scale
    bad = next((q for q in (args.out, target) if q.exists() and not q.is_dir()), None)
    if bad is not None:
        print(f"error: {bad} is not a folder; pass --out a folder", file=sys.stderr)
        return 2
    with warnings_to_stderr():
        try:
            written = build(args.scale, args.results, args.out, args.default_ref,
                            args.table)
        except MissingLogsError:
            print(f"error: no HPO logs under {args.results / args.scale}/ "
                  f"(run `make benchmark SCALE={args.scale}` first)", file=sys.stderr)
            return 2
    print(f"wrote {len(written)} files to {args.out / args.scale}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
