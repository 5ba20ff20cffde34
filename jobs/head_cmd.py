"""`gangeo head start|stop`: a Ray head on 127.0.0.1 with token authentication, to try `submit` and `schedule`.

Example::

    gangeo head start --dir ./gangeo-head
    # {"address": "127.0.0.1:PORT", "job_server": "http://127.0.0.1:PORT", "token_file": ".../auth_token", ...}
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=./gangeo-head/auth_token
    gangeo submit jobs/examples/quickstart.yaml --address http://127.0.0.1:PORT
    gangeo head stop --dir ./gangeo-head

Every process of the head binds 127.0.0.1 (checked after start; otherwise it is
stopped and the command fails, exit 9), and every request to it needs the token.
``stop`` ends the processes of that head only (found by its directory), never
another Ray on the machine.
"""

from __future__ import annotations

import argparse
import sys

from jobs.command import run_module
from jobs.output import print_json

__all__ = ["add_parser", "main"]

DEFAULT_DIR = "./gangeo-head"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``head start`` and ``head stop`` on a ``gangeo`` subparsers object."""
    p = subparsers.add_parser("head", help="start or stop a local Ray head on 127.0.0.1 with token auth")
    p.add_argument("action", choices=("start", "stop"))
    p.add_argument("--dir", default=DEFAULT_DIR,
                   help=f"the head's directory: its token file, Ray's logs and its record (default: {DEFAULT_DIR})")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs the head offers (default: all)")
    p.set_defaults(func=_cmd_head)


def _cmd_head(args: argparse.Namespace) -> int:
    from cluster.head import client_env, start_head, stop_head
    from geometry_core.errors import UsageError

    if args.num_cpus is not None and args.num_cpus < 1:
        raise UsageError(f"--num-cpus: expected a positive int, got {args.num_cpus}")
    if args.action == "stop":
        print_json({"dir": args.dir, "stopped_pids": stop_head(args.dir)}, indent=None)
        return 0
    head = start_head(args.dir, num_cpus=args.num_cpus)
    print_json({**head, "client_env": client_env(head["token_file"])})
    exports = " ".join(f"{k}={v}" for k, v in client_env(head["token_file"]).items())
    print(f"gangeo head: clients need `export {exports}`; stop with `gangeo head stop --dir {args.dir}`",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m jobs.head_cmd head start``); ``gangeo`` registers the same parser."""
    return run_module(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
