"""``gangeo report``: the path of the page on stdout, a line per figure on stderr off a terminal, the codes
left out counted, and an unknown run refused in one line with nothing written."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from jobs.cli import EXIT_CODES, run_command
from jobs.report_cmd import add_parser
from tests.support.report_run import RUN, write_report_run


@pytest.fixture
def store(tmp_path) -> Path:
    return write_report_run(tmp_path / "store")


def test_cli_report(store, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="gangeo")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", RUN, "--store", str(store), "--out", str(tmp_path / "r"),
                              "--no-traversals"])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip()) == tmp_path / "r" / f"{RUN}.html"
    # No bar off a terminal: a line per figure, and one for the codes of the fixture's chunks that are not done.
    lines = err.splitlines()
    figures = [ln for ln in lines if re.fullmatch(r"gangeo report: figure \d+/\d+: \S+ \([\d.]+ s\)", ln)]
    assert len(figures) == len(list((tmp_path / "r").glob("*.png"))) > 0, lines
    left_out = "gangeo report: left out 4 of 36 codes whose chunk is not done"
    assert [ln for ln in lines if ln not in figures] == [left_out]
    assert not any("traversal" in p.name for p in (tmp_path / "r").glob("*.png"))
    bad = parser.parse_args(["report", "nope", "--store", str(store), "--out", str(tmp_path / "bad")])
    assert run_command(bad) == EXIT_CODES["store"]
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "nope" in err
    assert not (tmp_path / "bad").exists()
