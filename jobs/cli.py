"""The ``gangeo`` command line: sweeps, their status and their results.

Examples::

    gangeo run jobs/examples/quickstart.yaml                  # embedded Ray, ./gangeo-results
    gangeo run spec.yaml --store s3://bucket/runs --s3-endpoint http://127.0.0.1:9000
    gangeo resume quickstart                                  # only chunks without done
    gangeo status quickstart
    gangeo ls
    gangeo query quickstart --array eigvals --index 0:4 --format table
    gangeo query quickstart --array eigvecs --format npy --out vecs.npy

Results go to stdout as strict JSON (``null`` for NaN; :mod:`jobs.output`), a
table with a header row, or .npy. An error is one line on stderr, ``gangeo CMD:
message``, and an exit status that names its kind (:data:`EXIT_CODES`;
ARCHITECTURE.md, "Errors"); a sweep that ends partial exits 1. A file the
command cannot read or write is a usage error (2); a reader that closes the
pipe early (``gangeo ls | head -1``) ends the command quietly with 141, the
status of a process stopped by SIGPIPE; Ctrl-C ends it with 130. Any other
exception is a bug and prints its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from importlib import import_module

import numpy as np

from cluster.states import RunState, Status
from geometry_core.errors import GangeoError, UsageError, clip
from jobs.output import print_array_table, print_json
from jobs.supervise import CHILD_ENV, SUPERVISED, mark_normal_exit, supervise

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_CODES", "EXIT_INTERRUPTED", "build_parser", "main", "package_version",
           "report_error", "run_command", "run_module", "show_defaults"]

# Subcommands written in their own modules, each with add_parser(subparsers).
HOOKS = ("jobs.submit", "jobs.schedule", "jobs.reduce_cmd", "jobs.report_cmd", "jobs.axes_cmd", "jobs.invert_cmd",
         "jobs.verify_cmd", "jobs.paper_tables_cmd", "jobs.models_cmd", "jobs.rm_cmd", "jobs.compare_cmd",
         "jobs.head_cmd")
FORMATS = ("json", "table", "npy")
_MAX_LINE = 2000  # characters of one error line on stderr
# Exit status per error kind (GangeoError.kind); 1 is a result (a partial sweep, a failed job).
EXIT_CODES = {
    "usage": 2,     # a command-line argument or input file that cannot be used (argparse too)
    "geometry": 3,  # bad input to the mathematics (shapes, ranges, names of layers or distances)
    "spec": 4,      # a sweep spec with problems, one line each
    "store": 5,     # the results store: unreachable, no such run, a different spec, locked, untrusted
    "weights": 6,   # model weights absent, or a checkpoint that would need code to load
    "submit": 7,    # the Ray job server refused or cannot be reached
    "schedule": 8,  # a bad schedule, or one that does not exist
    "ray": 9,       # Ray could not be started as required
    "error": 10,    # any other GangeoError
}
EXIT_BROKEN_PIPE = 128 + 13  # stdout's reader went away (SIGPIPE): quiet, as `yes | head -1`
EXIT_INTERRUPTED = 128 + 2   # Ctrl-C (SIGINT)


def package_version() -> str:
    """The installed gan-geometry version (``gangeo --version``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gan-geometry")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of a usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown argument is named with the command it was given to."""
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            cmd = " ".join(c for c in (getattr(ns, "command", None), getattr(ns, "models_action", None)) if c)
            self.exit(2, f"{' '.join(filter(None, (self.prog, cmd)))}: unrecognized arguments: {' '.join(extra)}\n")
        return ns


def _warn(cmd: str, message: object) -> None:
    print(f"gangeo {cmd}: {message}" if cmd else f"gangeo: {message}", file=sys.stderr)


def store_args(p: argparse.ArgumentParser, *, default: str | None = None, spec: bool = False) -> None:
    """``--store`` and ``--s3-endpoint``, shared by every command that opens a store.

    ``spec``: the command reads a spec file, whose ``store`` is the default.
    """
    from cluster.defaults import DEFAULT_STORE

    where = f"default: the spec's store, else {DEFAULT_STORE}" if spec else f"default {default or DEFAULT_STORE}"
    p.add_argument("--store", default=default, help=f"store URL: a directory or s3://bucket/prefix ({where})")
    p.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (else AWS_ENDPOINT_URL)")


def allow_import_arg(p: argparse.ArgumentParser) -> None:
    """``--allow-import``: the only way a spec read from a store may import code (cluster.trust)."""
    p.add_argument("--allow-import", action="store_true",
                   help="trust import paths (arch=) in the run's stored spec; a store never decides this itself")


def cmd_run(args: argparse.Namespace) -> int:
    from cluster.driver import run_sweep
    from cluster.spec import check_run_name, load_spec

    if args.name is not None:
        check_run_name(args.name, "--name")
    spec = load_spec(args.spec)
    if args.name is not None:
        spec = dataclasses.replace(spec, name=args.name)
    summary = run_sweep(spec, address=args.address, store=args.store, s3_endpoint=args.s3_endpoint,
                        progress=not args.quiet)
    return _sweep_result("run", summary)


def cmd_resume(args: argparse.Namespace) -> int:
    from cluster.driver import resume_sweep

    summary = resume_sweep(args.run, store=args.store, address=args.address, s3_endpoint=args.s3_endpoint,
                           progress=not args.quiet, allow_import=args.allow_import)
    return _sweep_result("resume", summary)


def _sweep_result(cmd: str, summary: dict) -> int:
    print_json(summary)
    for f in summary["failed"]:
        _warn(cmd, f"chunk {f['chunk']} of {f['key']} failed: {f['error']}")
    return 0 if summary["status"] == Status.COMPLETE else 1


def _open(args):
    from cluster.store import RunStore

    return RunStore(args.store, s3_endpoint=args.s3_endpoint, create=False)


def cmd_status(args: argparse.Namespace) -> int:
    if args.address:  # RUN is the id `gangeo submit` printed: follow the Ray job
        return _job_status(args)
    from cluster.run_state import run_state, timing_report

    rs = _open(args)
    attrs = rs.attrs(args.run)
    state = run_state(rs, args.run)
    # A run being deleted has lost some groups: no progress to count.
    prog = None if state["state"] == RunState.DELETING else rs.progress(args.run)
    keys = ("created", "updated", "failed", "versions")
    times = timing_report(attrs)  # summed over every attempt, and each attempt
    # "status" is what the run is doing now; "recorded_status" the last status its driver wrote.
    print_json({"run": args.run, "store": rs.url, "status": state["state"], "detail": state["detail"],
                "recorded_status": attrs.get("status"), **{k: attrs.get(k) for k in keys},
                "timing": times["cumulative"], "history": times["attempts"], "progress": prog})
    return 0


def _job_status(args: argparse.Namespace) -> int:
    from jobs.submit import show_job

    return show_job(args.run, args.address, follow=args.follow)


def cmd_ls(args: argparse.Namespace) -> int:
    from cluster.storage import StoreError, check_store

    try:
        rs = _open(args)
    except StoreError:
        # A reachable place where nothing was written yet (a new S3 prefix, an empty folder) holds
        # no runs; an unreachable bucket or a path that is not there stays an error.
        loc = check_store(args.store, s3_endpoint=args.s3_endpoint)
        if loc.kind == "s3" or (os.path.isdir(loc.path) and not os.listdir(loc.path)):
            print_json({"store": str(loc), "runs": []})
            return 0
        raise
    print_json({"store": rs.url, "runs": rs.ls()})
    return 0


def parse_index(text: str | None):
    """``"3"`` -> 3, ``"0:4"`` -> slice(0, 4), ``"1:9:2"`` -> a stepped slice; None -> everything."""
    if text is None:
        return None
    try:
        if ":" not in text:
            return int(text)
        parts = [int(p) if p.strip() else None for p in text.split(":")]
        if len(parts) > 3 or (len(parts) == 3 and parts[2] == 0):  # a step of 0 selects nothing, forever
            raise ValueError
        return slice(*parts)
    except ValueError:
        raise UsageError(f"--index: expected an integer or a slice like 0:8 (a step, if any, not 0), "
                         f"got {text!r}") from None


def _pick_group(rs, run: str, args) -> str:
    from cluster.layout import safe_name

    keys = rs.attrs(run).get("groups", [])
    want = [args.generator, args.space, safe_name(args.target) if args.target else None]
    hits = [k for k in keys if all(w is None or w == part for w, part in zip(want, k.split("/")))]
    if len(hits) != 1:
        what = "no group matches" if not hits else "several groups match"
        raise UsageError(f"{what} --generator/--space/--target; groups of {run!r}: {keys}")
    return hits[0]


def check_out_file(out: str | None) -> None:
    """``--out FILE``: its folder must exist and it must not be a folder (checked before any work)."""
    import os

    if out is None:
        return
    parent = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out):
        raise UsageError(f"--out {clip(out, bare=True)}: is a directory; expected a file name")
    if not os.path.isdir(parent):
        raise UsageError(f"--out {clip(out, bare=True)}: no directory {clip(parent, bare=True)}; create it first")


def check_out_dir(out: str | None) -> None:
    """``--out DIR``: a folder that exists or can be made, and takes files (checked before any work)."""
    from cluster.storage import writable_problem

    if out is None:
        return
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {clip(out, bare=True)} exists and is not a directory")
    problem = writable_problem(out)
    if problem is not None:
        raise UsageError(f"--out {clip(out, bare=True)}: {problem}")


def cmd_query(args: argparse.Namespace) -> int:
    from cluster.view import open_run

    index = parse_index(args.index)
    check_out_file(args.out if args.format == "npy" else None)
    rs = _open(args)
    key = _pick_group(rs, args.run, args)
    view = open_run(rs.root, args.run)  # a run being grown or deleted is refused here
    try:  # through the run view: codes whose chunk does not count read as NaN, never as numbers
        rows = view.read(key, args.array, index, skip_damaged=args.skip_damaged)
    except IndexError as exc:  # an index past the array's end is the user's
        raise UsageError(f"--index {args.index}: {exc}") from None
    data = rows.data
    said = ([f"skipped {rows.damaged} damaged chunks of {key} (their codes are NaN)"] if rows.damaged else []) + (
        [f"{rows.not_done} of the codes read are in chunks of {key} that are not done (NaN)"] if rows.not_done else [])
    if said:
        _warn("query", "; ".join(said))
    if args.format == "npy":
        if args.out:
            try:
                with open(args.out, "wb") as f:  # the path as given: np.save(path) would append ".npy"
                    np.save(f, data)
            except OSError as exc:  # a full disk or a device that takes nothing (/dev/full)
                raise UsageError(f"--out {clip(args.out, bare=True)}: cannot write "
                                 f"({exc.strerror or type(exc).__name__})") from None
        else:
            np.save(sys.stdout.buffer, data)
            sys.stdout.flush()
    elif args.format == "table":
        print_array_table(rs.group(args.run, key)[args.array], data, index)
    else:
        print_json({"run": args.run, "group": key, "array": args.array, "index": args.index,
                    "shape": list(data.shape), "dtype": str(data.dtype), "data": data})
    return 0


def _add_core(sub) -> None:
    from cluster.ray_runtime import CLUSTER_ADDRESS_HELP

    for name, what, help_, func in (
            ("run", "spec", "run a sweep spec (embedded Ray unless --address)", cmd_run),
            ("resume", "run", "finish a run: recompute only chunks without a done entry", cmd_resume)):
        p = sub.add_parser(name, help=help_)
        p.add_argument(what, help="YAML sweep spec" if what == "spec" else None)
        store_args(p, spec=what == "spec")
        p.add_argument("--address", default=None, metavar="CLUSTER", help=CLUSTER_ADDRESS_HELP)
        p.add_argument("--quiet", action="store_true", help="no progress lines or bar on stderr")
        if name == "resume":
            allow_import_arg(p)
        else:
            p.add_argument("--name", default=None, metavar="RUN",
                           help="run name instead of the spec's (e.g. one run per scheduled fire)")
        p.set_defaults(func=func)
    p = sub.add_parser("status", help="a run's status, timing, failed chunks and progress (JSON); "
                                      "with --address, a submitted Ray job's status")
    p.add_argument("run", help="run name, or with --address the job id `gangeo submit` printed")
    store_args(p)
    p.add_argument("--address", default=None, metavar="JOB_SERVER",
                   help="Ray job server (dashboard) URL, e.g. http://HEAD:8265: RUN is then a job id to follow")
    p.add_argument("--follow", action="store_true", help="with --address: stream the job's logs until it ends")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("ls", help="runs in a store (JSON; an empty folder or a new S3 prefix holds none)")
    store_args(p)
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("query", help="read an array of a run")
    p.add_argument("run")
    store_args(p)
    p.add_argument("--generator", default=None)
    p.add_argument("--space", default=None)
    p.add_argument("--target", default=None, help="distance or layer:<name>")
    p.add_argument("--array", default="eigvals",
                   help="z, eigvals, eigvecs, hessian, done, seconds, or reduce/<name> (default eigvals)")
    p.add_argument("--index", default=None, help="code index or slice, e.g. 3 or 0:8")
    p.add_argument("--format", choices=FORMATS, default="json")
    p.add_argument("--out", default=None, help="with --format npy: write this file instead of stdout")
    p.add_argument("--skip-damaged", action="store_true",
                   help="return NaN for codes of done chunks whose data fails its checksum (default: refuse)")
    p.set_defaults(func=cmd_query)


def build_parser() -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser and the hook modules that could not be imported (their commands are absent)."""
    parser = _Parser(prog="gangeo", description="Geometry of generative image models, at cluster scale.")
    parser.add_argument("--version", action="version", version=f"gangeo {package_version()}",
                        help="print the installed version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_core(sub)
    missing = []
    for name in HOOKS:
        try:
            module = import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            missing.append(name)
            continue
        module.add_parser(sub)
    show_defaults(parser)
    return parser, missing


def quiet_library_warnings() -> None:
    """Silence the one library warning a user cannot act on, unless warnings were asked for (``-W``,
    ``PYTHONWARNINGS``): torch's forward-mode AD registers its decompositions through
    ``torch.jit.script``, which then says, on the first ``jvp`` of every process, that it is deprecated."""
    import warnings

    if not sys.warnoptions:
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gangeo`` console script; returns the exit status."""
    quiet_library_warnings()
    parser, missing = build_parser()
    if missing:
        # A command module that fails to import is an installation fault, not a smaller CLI.
        print(f"gangeo: broken installation, missing command modules: {', '.join(missing)}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if argv is None and args.command in SUPERVISED and os.environ.get(CHILD_ENV) is None:
        return supervise(sys.argv[1:], command=args.command, run=_run_name(args),  # Ray may end the driver
                         ray_exit=EXIT_CODES["ray"], interrupted_exit=EXIT_INTERRUPTED)
    mark_normal_exit()
    return run_command(args)


def _run_name(args: argparse.Namespace) -> str:
    """The run a supervised command drives, for its last line ("RUN" when the spec cannot say)."""
    name = getattr(args, "run", None) or getattr(args, "name", None)
    if name is None and getattr(args, "spec", None):
        try:
            import yaml

            with open(args.spec, encoding="utf-8") as f:
                name = (yaml.safe_load(f) or {}).get("name")
        except Exception:  # noqa: BLE001 (the child reads the spec and says what is wrong with it)
            name = None
    return name if isinstance(name, str) and name.isprintable() and name else "RUN"


def run_module(add_parser, argv: list[str] | None = None) -> int:
    """Stand-alone entry of one command module (``python -m jobs.axes_cmd axes ...``), same handling."""
    quiet_library_warnings()
    parser = _Parser(prog="gangeo")
    add_parser(parser.add_subparsers(dest="command", required=True))
    show_defaults(parser)
    return run_command(parser.parse_args(argv))


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option's default in its ``-h`` line, unless it has none (None, a flag) or the help
    already names it; the same for every subcommand, however its module wrote its options."""
    for action in parser._actions:  # argparse keeps options and subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                show_defaults(child)
            continue
        default, help_ = action.default, action.help
        if (help_ == argparse.SUPPRESS or default in (None, argparse.SUPPRESS) or isinstance(default, bool)
                or not (action.option_strings or action.nargs in ("?", "*"))
                or "default" in (help_ or "").lower()):
            continue
        action.help = f"{help_} (default: %(default)s)" if help_ else "(default: %(default)s)"


def check_run_arg(args: argparse.Namespace) -> None:
    """A RUN argument must be a run name (the spec's rule) before any store is opened: never a path
    (``..``), a reserved group (``_locks``) or ``reduce``. ``status --address`` takes a job id instead."""
    from cluster.spec import check_run_name

    run = getattr(args, "run", None)
    if isinstance(run, str) and not (args.command == "status" and getattr(args, "address", None)):
        check_run_name(run)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: the one place where a user's error becomes a line and an exit code."""
    cmd = getattr(args, "command", None) or ""
    try:
        check_run_arg(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at interpreter exit
        return code
    except GangeoError as exc:  # anything else is a bug and keeps its traceback
        return report_error(cmd, exc)
    except BrokenPipeError:
        return _reader_went_away()
    except KeyboardInterrupt:
        _warn(cmd, "interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # damaged or read-only storage is the store's error, not a bug; Ray's, Ray's
        from cluster.damage import as_store_error
        from cluster.ray_runtime import as_ray_error, task_cause

        cause = task_cause(exc)  # what a Ray task raised: a store or gangeo error there is that error here
        if isinstance(cause, GangeoError):
            return report_error(cmd, cause)
        err = as_store_error(cause, getattr(args, "store", None), getattr(args, "run", None)) or as_ray_error(exc)
        if err is None and cause is exc and isinstance(exc, OSError) and exc.filename is not None:
            # a file the user named (an --out target, an input) that the system refuses
            err = UsageError(f"cannot use {clip(os.fsdecode(exc.filename), bare=True)}: "
                             f"{exc.strerror or type(exc).__name__}")
        if err is None:
            raise
        return report_error(cmd, err)


def _reader_went_away() -> int:
    """stdout's reader closed the pipe (``| head``): stop quietly. Python's advice (the
    ``signal`` module's notes on SIGPIPE): point stdout at devnull so the exit flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (captured in-process)
        pass
    return EXIT_BROKEN_PIPE


def report_error(cmd: str, exc: GangeoError) -> int:
    """Print ``gangeo CMD: message`` (a spec: one line per problem); return the kind's exit code."""
    for line in getattr(exc, "problems", None) or [str(exc)]:
        line = " ".join(str(line).split())
        # Messages clip what they echo (geometry_core.errors.clip); this bounds any that does not.
        _warn(cmd, line if len(line) <= _MAX_LINE else line[:_MAX_LINE] + f"... ({len(line)} characters)")
    return EXIT_CODES.get(exc.kind, EXIT_CODES["error"])


if __name__ == "__main__":
    sys.exit(main())
