"""The command framework of ``gangeo``: how a parsed command runs, and how its errors become one line and an exit code.

Example (a command module's stand-alone entry)::

    from jobs.command import run_module, store_args

    def add_parser(sub):
        p = sub.add_parser("verify", help=...)
        store_args(p)
        p.set_defaults(func=cmd_verify)

    if __name__ == "__main__":
        sys.exit(run_module(add_parser))

An error is one line on stderr, ``gangeo CMD: message``, and an exit status that
names its kind (:data:`EXIT_CODES`; ARCHITECTURE.md, "Errors"). The commands
themselves live in ``jobs/cli.py`` (run, resume, status, ls, query) and in one
module each (``jobs/*_cmd.py``, ``jobs/submit.py``, ``jobs/schedule.py``); they parse
arguments, call ``cluster``/``geometry_core`` and print through :mod:`jobs.output`.
"""

from __future__ import annotations

import argparse
import os
import sys

from geometry_core.errors import GangeoError, UsageError, clip

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_CODES", "EXIT_INTERRUPTED", "Parser", "allow_import_arg", "check_out_dir",
           "check_out_file", "check_run_arg", "package_version", "parse_index", "quiet_library_warnings",
           "report_error", "run_command", "run_module", "show_defaults", "store_args", "warn"]

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


class Parser(argparse.ArgumentParser):
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


def warn(cmd: str, message: object) -> None:
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


def check_out_file(out: str | None) -> None:
    """``--out FILE``: its folder must exist and it must not be a folder (checked before any work)."""
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


def quiet_library_warnings() -> None:
    """Silence the one library warning a user cannot act on, unless warnings were asked for (``-W``,
    ``PYTHONWARNINGS``): torch's forward-mode AD registers its decompositions through
    ``torch.jit.script``, which then says, on the first ``jvp`` of every process, that it is deprecated."""
    import warnings

    if not sys.warnoptions:
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


def run_module(add_parser, argv: list[str] | None = None) -> int:
    """Stand-alone entry of one command module (``python -m jobs.axes_cmd axes ...``), same handling."""
    quiet_library_warnings()
    parser = Parser(prog="gangeo")
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
        warn(cmd, "interrupted")
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
        warn(cmd, line if len(line) <= _MAX_LINE else line[:_MAX_LINE] + f"... ({len(line)} characters)")
    return EXIT_CODES.get(exc.kind, EXIT_CODES["error"])
