"""Issue 11, "CLI conventions": what every ``gangeo`` command does the same way.

One error path (one line, the documented exit code, never a traceback), no aiohttp
noise from S3 commands, ``--version`` and defaults in ``-h``, strict JSON and tables
with a header row, a quiet exit on a closed pipe, and a sweep's progress on stderr
from its first second. Processes that must be observed from outside (stderr of a
real process, a closed pipe, the interpreter's exit) run ``python -m jobs.cli``.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import yaml

from cluster.progress import SweepProgress
from cluster.storage import StoreError, open_root
from jobs.cli import EXIT_BROKEN_PIPE, EXIT_CODES, EXIT_INTERRUPTED, build_parser, main, report_error
from jobs.output import json_safe
from tests.support.runs import build_run, tanh_spec

REPO = Path(__file__).resolve().parents[2]


def _env(extra: dict | None = None) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "GANGEO_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(extra or {})}


def _start(argv: list[str], env: dict | None = None, *, closed_stdout: bool = False) -> subprocess.Popen:
    """``python ARGV`` from the repository, stdout closed at once (a reader gone) when asked."""
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if closed_stdout:
        proc.stdout.close()
    return proc


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out = proc.stdout.read() if not proc.stdout.closed else ""
    err = proc.stderr.read()
    return proc.wait(timeout=180), out, err


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as RFC 8259 parsers do."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def _tree(root: Path) -> list:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A finished run ``v`` in ``store``, a good spec, a plain file; cases must leave it unchanged."""
    w = tmp_path_factory.mktemp("world")
    build_run(w / "store", "v")
    (w / "good.yaml").write_text(yaml.safe_dump(tanh_spec("good")))
    (w / "afile").write_text("not a store\n")
    return w


# --- 1. one error path ---------------------------------------------------------------------------

def _cases(w: Path) -> list[tuple[str, list[str], int]]:
    store, q = str(w / "store"), ["query", "v", "--store", str(w / "store")]
    return [
        ("spec_missing", ["run", str(w / "nope.yaml"), "--store", str(w / "out")], EXIT_CODES["spec"]),
        ("spec_is_a_directory", ["run", str(w), "--store", str(w / "out")], EXIT_CODES["spec"]),
        ("store_is_a_file", ["ls", "--store", str(w / "afile")], EXIT_CODES["store"]),
        ("store_bad_bucket", ["ls", "--store", "s3://Bad_Bucket"], EXIT_CODES["store"]),
        ("run_absent", ["status", "zz", "--store", store], EXIT_CODES["store"]),
        ("run_name_is_a_path", ["status", "../v", "--store", store], EXIT_CODES["usage"]),
        ("unknown_command", ["frobnicate"], EXIT_CODES["usage"]),
        ("flag_not_a_number", ["verify", "v", "--store", store, "--rtol", "abc"], EXIT_CODES["usage"]),
        ("index_text", [*q, "--index", "abc"], EXIT_CODES["usage"]),
        ("table_of_3d", [*q, "--array", "eigvecs", "--format", "table"], EXIT_CODES["usage"]),
        # files the system refuses (procfs holds no new files, even for root): usage errors, not bugs
        ("out_file_refused", [*q, "--format", "npy", "--out", "/proc/gangeo-test.npy"], EXIT_CODES["usage"]),
        ("report_dir_refused", ["report", "v", "--store", store, "--out", "/proc/gangeo-test-report",
                                "--no-traversals", "--quiet"], EXIT_CODES["usage"]),
    ]


CASE_IDS = [c[0] for c in _cases(Path("w"))]


def _run_in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASE_IDS)
def test_user_errors_are_one_line_with_their_exit_code(world, capsys, case):
    _, argv, code = next(c for c in _cases(world) if c[0] == case)
    before = _tree(world)
    got, out, err = _run_in_process(argv, capsys)  # an exception escaping here is the traceback
    lines = err.strip().splitlines()
    assert (got, len(lines)) == (code, 1), err
    assert lines[0].startswith("gangeo") and "Traceback" not in err and out == ""
    assert _tree(world) == before


def test_a_missing_trunk_is_the_weights_code_in_one_whole_line(capsys):
    from geometry_core.errors import MissingWeightsError

    message = ("targets: lpips-alex: lpips-alex needs torchvision's ImageNet backbone file; "
               "alternatively use --distance mse")
    assert report_error("run", MissingWeightsError(message)) == EXIT_CODES["weights"] == 6
    assert capsys.readouterr().err.splitlines() == [f"gangeo run: {message}"]


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert (exc.value.code, capsys.readouterr().out.strip()) == (0, f"gangeo {version('gan-geometry')}")


@pytest.fixture(scope="module")
def outside(world, s3_server, s3_run) -> dict[str, tuple[int, str, str]]:
    """The checks that need a process of their own (an interpreter's exit, a closed pipe), started
    together: {name: (exit status, stdout, stderr)}."""
    s3 = s3_server.env()
    # status and query through the CLI's own entry, then stores dropped as a long process drops them
    more = ("import gc, sys\nfrom jobs.cli import main\nfrom cluster.store import RunStore\n"
            f"assert main(['status', 'v', '--store', {s3_run!r}]) == 0\n"
            f"assert main(['query', 'v', '--index', '0', '--store', {s3_run!r}]) == 0\n"
            f"for _ in range(3):\n    assert RunStore({s3_run!r}, create=False).ls()\n    gc.collect()\n")
    procs = {
        "s3_ls": _start(["-m", "jobs.cli", "ls", "--store", s3_run], s3),
        "s3_more": _start(["-W", "always::ResourceWarning", "-c", more], s3),
        "pipe_ls": _start(["-m", "jobs.cli", "ls", "--store", str(world / "store")], closed_stdout=True),
        # computes a metric (forward mode: torch warns about itself), then cannot write its --out
        "axes_refused": _start(["-m", "jobs.cli", "axes", "--out", "/proc/gangeo-axes", "--topk", "1", "--steps",
                                "1"]),
    }
    return {name: _finish(p) for name, p in procs.items()}


def test_a_real_command_says_one_line_and_nothing_else(outside):
    code, out, err = outside["axes_refused"]
    assert (code, out) == (EXIT_CODES["usage"], "")
    assert err == "gangeo axes: --out /proc/gangeo-axes: cannot write in /proc (No such file or directory)\n", err


def test_ctrl_c_is_one_line_and_130(world, capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr("jobs.cli.cmd_ls", interrupted)
    code, out, err = _run_in_process(["ls", "--store", str(world / "store")], capsys)
    assert code == EXIT_INTERRUPTED == 130 and err.strip() == "gangeo ls: interrupted" and out == ""


def test_a_store_directory_that_cannot_be_created_is_a_store_error():
    with pytest.raises(StoreError, match="cannot create the store directory /proc/gangeo-test-store"):
        open_root("/proc/gangeo-test-store")


def test_readme_exit_code_table_is_the_cli_s():
    readme = (REPO / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| (\w+)", readme, flags=re.M))
    documented = {int(code): word for code, word in table.items()}
    assert {code: documented.get(code) for code in EXIT_CODES.values()} == {v: k for k, v in EXIT_CODES.items()}
    assert documented[EXIT_INTERRUPTED] == "interrupted" and documented[EXIT_BROKEN_PIPE] == "closed"


# --- 2. S3 commands close their sessions ---------------------------------------------------------

@pytest.fixture(scope="module")
def s3_run(s3_server) -> str:
    url = s3_server.new_bucket("cli") + "/runs"
    build_run(url, "v")
    return url


def test_s3_commands_leave_no_unclosed_session(outside):
    code, out, err = outside["s3_ls"]
    assert code == 0 and _strict_json(out)["runs"][0]["run"] == "v", err
    assert "Unclosed" not in err and err == "", err
    code, out, err = outside["s3_more"]  # status, query, and three stores dropped in one process
    assert code == 0 and out.count('"run": "v"') == 2, err
    assert "Unclosed" not in err and err == "", err


# --- 3. --version, defaults in -h ----------------------------------------------------------------

def _commands(parser, prefix=""):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield f"{prefix}{name}", child
                yield from _commands(child, f"{prefix}{name} ")


def test_every_option_with_a_default_shows_it_in_help():
    import argparse

    missing, helps = [], {}
    for name, p in _commands(build_parser()[0]):
        helps[name] = " ".join(p.format_help().split())  # renders every "%(default)s"
        missing += [f"{name} {a.option_strings[-1]}" for a in p._actions
                    if a.option_strings and a.default not in (None, False, True, argparse.SUPPRESS)
                    and a.help != argparse.SUPPRESS and "default" not in (a.help or "").lower()]
    assert not missing, missing
    assert "--format {json,table,npy} (default: json)" in helps["query"]
    assert ("--tile TILE codes per homogeneity tile (default 64; larger past 2,560 codes, so that there are at "
            "most 820 tile tasks)") in helps["reduce"]
    assert "--topk TOPK (default: 5)" in helps["axes"]  # an option written without help


# --- 4. tables with a header, strict JSON, a closed pipe -----------------------------------------

def test_query_table_has_a_header_row_and_labelled_rows(world, capsys):
    store = str(world / "store")
    assert main(["query", "v", "--store", store, "--format", "table", "--index", "2:4"]) == 0
    lines = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()]
    # Eigenvalue ranks from 1, as xarray's eig and the report; codes from 0, as --index takes them.
    assert lines[0] == ["code"] + [f"eig{j}" for j in range(1, 13)] and [r[0] for r in lines[1:]] == ["2", "3"]
    assert main(["query", "v", "--store", store, "--format", "table", "--array", "done"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["chunk\tdone", "0\t1", "1\t1", "2\t1", "3\t1"]


def test_query_table_labels_ranks_and_fractions_as_xarray_does(tmp_path, capsys):
    from cluster.xr import open_run_xarray
    from tests.support.stored_runs import write_run

    write_run(tmp_path / "s", "r", n=4)
    red = open_run_xarray(str(tmp_path / "s"), "r", "dcgan-faces/z/mse", reduced=True)
    q = ["query", "r", "--store", str(tmp_path / "s"), "--format", "table"]
    assert main([*q, "--array", "reduce/anisotropy_points", "--index", "1:3"]) == 0
    header, *rows = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()]
    # 0.99999 written exactly (a table once showed it as 1.0), the value .sel(fraction=...) takes.
    assert header == ["code"] + [f"fraction={f!r}" for f in red.fraction.values.tolist()]
    assert header[-1] == "fraction=0.99999" and [r[0] for r in rows] == ["1", "2"]
    assert [int(v) for v in rows[0][1:]] == red.anisotropy_points.sel(code=1).values.tolist()
    assert main([*q, "--array", "reduce/global_eigvals", "--index", "0:3"]) == 0
    header, *rows = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["1", "2", "3"] == [str(k) for k in red.eig.values[:3]]
    # Tables print 9 significant digits: within half a unit of the 9th, 5e-9 relative.
    assert float(rows[0][1]) == pytest.approx(float(red.global_eigvals.sel(eig=1)), rel=5e-9)


def test_paper_tables_text_has_a_header_row_per_table():
    from jobs.paper_tables_cmd import format_table

    ms = {"mean": 0.5, "std": 0.1}
    result = {"settings": {"n": 3, "seed": 0, "method": "exact", "dtype": "float64", "lpips_backbone": "-",
                           "reference": "mse"},
              "generators": {"dcgan-faces": {"latent_dim": 100, "table2": {"mse": {"mean_spectrum": {"0.99": 7},
                                                                                   "per_code": {"0.99": ms}}},
                                             "table3": {"mse": {"log": ms, "lin": ms}},
                                             "table5": {"ssim": {k: ms for k in ("h_corr", "eig_corr", "sim_log",
                                                                                 "sim_lin", "slope", "intercept")}}}}}
    lines = format_table(result).splitlines()
    titles = [i for i, line in enumerate(lines) if line.startswith("Table ")]
    assert len(titles) == 3 and all(lines[i + 1].split()[:2] == ["generator", "distance"] for i in titles), lines
    assert "fraction 0.99" in lines[titles[0] + 1] and "h_corr" in lines[titles[2] + 1]


def test_json_output_is_strict_json_with_null_for_nan(world, tmp_path, capsys):
    store = tmp_path / "s"
    build_run(store, "v")
    chunk = store / "v" / "module" / "z" / "mse" / "eigvals" / "c" / "1" / "0"
    chunk.write_bytes(b"\0" + chunk.read_bytes()[1:])  # chunk 1 damaged: its codes read as NaN
    assert main(["query", "v", "--store", str(store), "--skip-damaged"]) == 0
    data = _strict_json(capsys.readouterr().out)["data"]
    assert data[2] == [None] * 12 and all(isinstance(x, float) for x in data[0])


def test_json_safe_maps_non_finite_and_numpy_values():
    obj = {"a": float("nan"), "b": [np.inf, np.float32(1.5)], "c": np.array([[1.0, np.nan]]), 3: (np.int64(2),),
           "d": Path("/x")}
    assert json_safe(obj) == {"a": None, "b": [None, 1.5], "c": [[1.0, None]], 3: [2], "d": "/x"}


def test_no_command_prints_json_around_the_one_printer():
    offenders = [f"{p.name}:{i}" for p in (REPO / "jobs").glob("*.py") if p.name != "output.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"print\(json\.dumps|json\.dump\(.*sys\.stdout", line)]
    assert not offenders, offenders


def test_a_closed_pipe_ends_the_command_quietly(outside):
    code, _, err = outside["pipe_ls"]  # `gangeo ls | head -0`: the reader was gone before the first byte
    assert (code, err) == (EXIT_BROKEN_PIPE, ""), err


# --- 5. progress ---------------------------------------------------------------------------------

class _Spec:
    name, n_codes, chunk_size, targets = "p", 6, 2, ("mse",)
    generators = (type("G", (), {"spaces": ("z",)})(),)
    resources = {"workers": 1}


def _progress_lines(tty: bool, enabled: bool = True) -> list[str]:
    stream = io.StringIO()
    prog = SweepProgress("p", enabled=enabled, stream=stream, tty=tty)
    prog.starting(_Spec(), address=None)
    with prog.computing(chunks=3, codes=6, done_before=0, workers=1):
        for c in range(3):
            prog.chunk_done("m/z/mse", c, 2, 0.5)
    return stream.getvalue().splitlines()


def test_progress_is_a_line_per_chunk_off_a_terminal():
    lines = _progress_lines(tty=False)
    assert lines[0] == "sweep p: 1 group x 6 codes, 3 chunks of 2 codes; starting embedded Ray and 1 worker"
    assert lines[2:5] == [f"sweep p: chunk {i}/3 done (group m/z/mse chunk {i - 1}, 2 codes, 0.5 s)"
                          for i in (1, 2, 3)]
    assert lines[-1].startswith("sweep p: 3/3 chunks done in")


def test_progress_of_a_run_with_nothing_left_is_one_line():
    stream = io.StringIO()
    with SweepProgress("p", stream=stream, tty=False).computing(chunks=0, codes=0, done_before=3, workers=1):
        pass
    assert stream.getvalue() == "sweep p: nothing to compute: all 3 chunks are done\n"


def test_progress_on_a_terminal_is_a_bar_and_quiet_is_silent():
    lines = _progress_lines(tty=True)
    assert lines[0].startswith("sweep p: 1 group x 6 codes") and not any("chunk 1/3" in ln for ln in lines)
    assert "6/6" in "".join(lines)  # tqdm's bar reached every code
    assert _progress_lines(tty=False, enabled=False) == []


@pytest.mark.slow
def test_a_sweep_reports_progress_from_its_start_on_a_pipe(tmp_path):
    spec = tanh_spec("p", n=6, resources={"workers": 1, "cpus_per_worker": 1},
                     reducers={"global": True, "homogeneity": True, "anisotropy": True})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "run", str(tmp_path / "p.yaml"), "--store",
                             str(tmp_path / "s")], cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    seen = [(time.monotonic(), line.rstrip("\n")) for line in proc.stderr]
    assert proc.wait(timeout=120) == 0, seen
    lines = [line for _, line in seen]
    chunks = [i for i, line in enumerate(lines) if re.match(r"sweep p: chunk \d/3 done \(group module/z/mse", line)]
    assert lines[0] == "sweep p: 1 group x 6 codes, 3 chunks of 2 codes; starting embedded Ray and 1 worker", lines
    assert len(chunks) == 3 and chunks[0] > 0, lines
    assert seen[chunks[0]][0] > seen[0][0]  # the first line came before any chunk finished
    # The reducers that follow say when they start and end, off a terminal too.
    reducing = [i for i, line in enumerate(lines) if line.startswith("sweep p: reducing: ")]
    reduced = [i for i, line in enumerate(lines) if re.match(r"sweep p: reduced 1 group in [\d.]+ s$", line)]
    assert len(reducing) == len(reduced) == 1 and chunks[-1] < reducing[0] < reduced[0], lines


@pytest.mark.parametrize("command", [["axes"], ["invert", "--steps", "1"]])
@pytest.mark.parametrize("out", ["/proc/gangeo-test-out", "FILE/sub"])
def test_an_out_folder_that_takes_no_files_is_refused_before_any_work(command, out, tmp_path, capsys, monkeypatch):
    """procfs takes no new files (even for root); a folder under a file cannot be made:
    one line, no generator loaded."""
    import geometry_core

    def no_work(*_args, **_kw):
        raise AssertionError("a generator was loaded before --out was checked")

    monkeypatch.setattr(geometry_core, "load_generator", no_work)
    (tmp_path / "FILE").write_text("x")
    out = out.replace("FILE", str(tmp_path / "FILE"))
    code, _, err = _run_in_process([*command, "--out", out], capsys)
    lines = err.strip().splitlines()
    assert code == EXIT_CODES["usage"] and len(lines) == 1, err
    assert lines[0].startswith(f"gangeo {command[0]}: --out ") and ("cannot write in" in lines[0]
                                                                 or "is a file, not a directory" in lines[0]), err


def test_ray_cluster_messages_go_to_stderr_not_the_result(ray_local, capsys):
    """Ray prints cluster events to a driver ("node ... marked dead") on stdout; a gangeo driver's stdout is
    its JSON result alone (issue 17: a lost node broke `gangeo run --address ... | jq`)."""
    from ray._private import worker as ray_worker

    ray_worker.print_to_stdstream({"lines": ["node 42 has been marked dead"], "pid": "raylet", "is_err": False},
                                  ignore_prefix=False)
    captured = capsys.readouterr()
    assert captured.out == "" and "node 42 has been marked dead" in captured.err


@pytest.mark.parametrize("argv, want", [
    (["search", "--basis", "none", "--objective", "target", "--budget", "4", "--popsize", "2", "--seeds", "2"],
     [r"gangeo search: CMA-ES run of 4 evaluations 1/2: cma seed 0: \S+ \([\d.]+ s\)",
      r"gangeo search: CMA-ES run of 4 evaluations 2/2: cma seed 1: \S+ \([\d.]+ s\)"]),
    (["invert", "--basis", "none", "--steps", "2"],
     [r"gangeo invert: inverting with adam, 2 evaluations of mse, basis none", r"gangeo invert: distance \S+ -> \S+"]),
    (["localdim", "--n", "2", "--layers", "image", "--distortion"],
     [r"gangeo localdim: local dimension of 2 codes at 1 layers",
      r"gangeo localdim: distortion of layer 1/1: image \([\d.]+ s\)"]),
])
def test_long_commands_say_where_they_are_off_a_terminal(argv, want, capsys):
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(want) + 1, err
    for pattern, line in zip(want, err):
        assert re.fullmatch(pattern, line), (pattern, line)
    assert re.fullmatch(rf"gangeo {argv[0]}: done in [\d.]+ s", err[-1]), err
    assert main([*argv, "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_report_figures_are_a_line_each_off_a_terminal(capsys):
    from cluster.report_html import Figure, render_figures

    figures = [Figure("spectrum", "", lambda: b"png1"), Figure("homogeneity", "", lambda: b"png2")]
    render_figures(figures, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert [re.sub(r"\([\d.]+ s\)", "(T)", line) for line in err] == [
        "gangeo report: figure 1/2: spectrum (T)", "gangeo report: figure 2/2: homogeneity (T)"]
    assert [f.png for f in figures] == [b"png1", b"png2"]
    render_figures(figures, progress=False)
    assert capsys.readouterr().err == ""
