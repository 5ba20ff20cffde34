"""Small promises of the command line a new user meets first: start-up cost, help texts,
one-line errors naming the command, an empty store listed as empty."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]


def _commands() -> list[list[str]]:
    import argparse

    out, todo = [], [([], build_parser()[0])]
    while todo:
        prefix, p = todo.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    out.append([*prefix, name])
                    todo.append(([*prefix, name], child))
    return sorted(out)


def test_version_and_help_import_no_torch_or_ray():
    """`gangeo --version` and every `-h` stay cheap: torch and Ray are imported by the commands
    that compute, never to build the parser (a fresh interpreter, so nothing was imported before)."""
    argvs = [["--version"], ["-h"]] + [[*c, "-h"] for c in _commands()]
    code = ("import sys\nfrom jobs.cli import main\n"
            f"for argv in {argvs!r}:\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('\\nLOADED', sorted(m for m in ('torch', 'ray', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "LOADED []"


def test_reduce_tile_default_is_the_reducers():
    from cluster.reduce import DEFAULT_TILE, MAX_BLOCKS
    from jobs import reduce_cmd

    assert (reduce_cmd.TILE, reduce_cmd.MAX_BLOCKS) == (DEFAULT_TILE, MAX_BLOCKS)
    from cluster.reduce import REDUCER_TABLE
    from jobs.reduce_cmd import REDUCERS_HELP

    *most, last = [r.title for r in REDUCER_TABLE.values()]
    assert REDUCERS_HELP == f"{', '.join(most)} and {last}"


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "-h"])
    return " ".join(capsys.readouterr().out.split())


def test_store_help_says_what_each_command_opens(capsys):
    assert "(default: the spec's store, else ./gangeo-results)" in _help(["run"], capsys)
    for cmd in ("resume", "status", "ls", "query", "rm"):
        text = _help([cmd, *(["x"] if cmd != "ls" else [])], capsys)
        assert "--store STORE store URL: a directory or s3://bucket/prefix (default ./gangeo-results)" in text, cmd
        assert "spec" not in text.split("--store STORE", 1)[1].split("--", 1)[0], cmd


@pytest.mark.parametrize("cmd, default", [("invert", "global"), ("search", "both")])
def test_basis_help_shows_each_commands_default(cmd, default, capsys):
    import re

    line = re.search(r"--basis \{global,none,both\} eigenbasis.*?--metric", _help([cmd], capsys)).group(0)
    assert line.endswith(f"(default: {default}) --metric"), line


def test_models_fetch_usage_is_one_command_line(capsys):
    text = _help(["models", "fetch"], capsys)
    assert text.startswith("usage: gangeo models fetch [-h] [--all] [NAME ...] ")


@pytest.mark.parametrize("argv, prog", [(["ls", "--nope"], "gangeo ls"),
                                        (["status", "r", "--nope"], "gangeo status"),
                                        (["models", "fetch", "--nope"], "gangeo models fetch")])
def test_an_unknown_option_is_named_with_its_command(argv, prog, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err == f"{prog}: unrecognized arguments: --nope\n"


def test_ls_of_an_empty_folder_or_a_new_s3_prefix_lists_no_runs(tmp_path, s3_server, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    url = s3_server.new_bucket("ls") + "/new/prefix"
    for store in (str(empty), url):
        capsys.readouterr()
        assert main(["ls", "--store", store]) == 0
        assert json.loads(capsys.readouterr().out) == {"store": store, "runs": []}
    assert main(["ls", "--store", str(tmp_path / "absent")]) == 5  # a path that is not there: a typo
    assert capsys.readouterr().err.startswith("gangeo ls: no results store at ")
