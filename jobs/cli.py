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
message``, and an exit status that names its kind (:mod:`jobs.command`, which runs
every command; ARCHITECTURE.md, "Errors"); a sweep that ends partial exits 1. A file the
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
from geometry_core.errors import UsageError, clip
from jobs.command import (
    EXIT_BROKEN_PIPE,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    Parser,
    allow_import_arg,
    check_out_file,
    package_version,
    parse_index,
    quiet_library_warnings,
    report_error,
    run_command,
    run_module,
    show_defaults,
    store_args,
    warn,
)
from jobs.output import print_array_table, print_json
from jobs.supervise import AVAILABLE as supervise_ok
from jobs.supervise import CHILD_ENV, SUPERVISED, mark_normal_exit, supervise

# The framework's names stay importable from here (jobs.command owns them).
__all__ = ["EXIT_BROKEN_PIPE", "EXIT_CODES", "EXIT_INTERRUPTED", "build_parser", "main", "package_version",
           "report_error", "run_command", "run_module", "show_defaults"]

# Subcommands written in their own modules, each with add_parser(subparsers).
HOOKS = ("jobs.submit", "jobs.schedule", "jobs.reduce_cmd", "jobs.report_cmd", "jobs.axes_cmd", "jobs.invert_cmd",
         "jobs.verify_cmd", "jobs.paper_tables_cmd", "jobs.models_cmd", "jobs.rm_cmd", "jobs.compare_cmd",
         "jobs.head_cmd")
FORMATS = ("json", "table", "npy")
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
        warn(cmd, f"chunk {f['chunk']} of {f['key']} failed: {f['error']}")
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


def _pick_group(rs, run: str, args) -> str:
    from cluster.layout import safe_name

    keys = rs.attrs(run).get("groups", [])
    want = [args.generator, args.space, safe_name(args.target) if args.target else None]
    hits = [k for k in keys if all(w is None or w == part for w, part in zip(want, k.split("/")))]
    if len(hits) != 1:
        what = "no group matches" if not hits else "several groups match"
        raise UsageError(f"{what} --generator/--space/--target; groups of {run!r}: {keys}")
    return hits[0]


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
        warn("query", "; ".join(said))
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
    parser = Parser(prog="gangeo", description="Geometry of generative image models, at cluster scale.")
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gangeo`` console script; returns the exit status."""
    quiet_library_warnings()
    parser, missing = build_parser()
    if missing:
        # A command module that fails to import is an installation fault, not a smaller CLI.
        print(f"gangeo: broken installation, missing command modules: {', '.join(missing)}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if argv is None and args.command in SUPERVISED and supervise_ok and os.environ.get(CHILD_ENV) is None:
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


if __name__ == "__main__":
    sys.exit(main())
