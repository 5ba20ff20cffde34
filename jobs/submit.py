"""`gangeo submit SPEC --address http://HEAD:8265`: a sweep as a Ray job; `gangeo job-status` follows it.

Example::

    gangeo submit jobs/examples/quickstart.yaml --address http://head:8265 --store s3://bucket/runs
    gangeo job-status quickstart-20260101T0000 --address http://head:8265 --follow

The spec is validated here first; nothing is submitted if it has a problem.
The job's runtime environment carries the project (``geometry_core``,
``cluster`` and ``jobs`` as ``py_modules``) and a working directory holding only
the validated spec, so the head needs the project's dependencies (torch, ray,
zarr, s3fs, gan-face-generate: ``ray-cluster.yaml``'s setup commands install
them) but not this checkout. The entrypoint runs in a shell on the head:
``PYTHON -m jobs.cli run spec.yaml --address auto``, where ``PYTHON`` is the
interpreter that has those dependencies; the runtime environment's
``py_executable`` names the same interpreter, so the job's Ray workers use it
too. ``PYTHON`` is ``--python`` or else the submitting interpreter
(``sys.executable``): a head whose ``PATH`` finds another ``python`` (a
``ray start`` from a virtual environment that was never activated) still runs
the job. ``--address auto`` joins the cluster instead of starting a private Ray.

A fixed ``--submission-id`` is idempotent: submitting the same spec under the
same id again reports the existing job (``"already_existed": true``, exit 0);
the job's metadata carries the spec's sha256 to tell; a different spec under an
id already taken is refused (:class:`SubmitError`, exit 7).

Credentials never travel in the job request (Ray keeps it in the job's
metadata): the cluster's nodes reach S3 with their own role or environment;
only a non-secret endpoint URL is passed, as ``--s3-endpoint`` on the command
line. The job's runtime environment sets no ``env_vars``: Ray refuses a driver
whose ``ray.init(runtime_env=...)`` repeats a variable of the job's.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from geometry_core.errors import GangeoError
from jobs.output import print_json

__all__ = [
    "PROJECT_MODULES",
    "add_parser",
    "build_submission",
    "follow_job",
    "job_status",
    "show_job",
    "submit_job",
    "submit_spec",
]

PROJECT_MODULES = ("geometry_core", "cluster", "jobs")
SPEC_NAME = "spec.yaml"
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class SubmitError(GangeoError, RuntimeError):
    """A submission that cannot be made or followed (one line)."""

    kind = "submit"


def _project_dir() -> Path:
    """The directory holding the project's packages (a checkout or site-packages)."""
    return Path(__file__).resolve().parent.parent


def build_submission(
    spec_path: str | os.PathLike,
    staging: str | os.PathLike,
    *,
    store: str | None = None,
    s3_endpoint: str | None = None,
    submission_id: str | None = None,
    python: str | None = None,
) -> dict:
    """Validate the spec and stage it; return the keyword arguments of ``JobSubmissionClient.submit_job``.

    ``staging``: an empty directory that becomes the job's working directory (it
    receives ``spec.yaml``, the validated spec with ``store`` applied).
    ``python``: the head's interpreter for the entrypoint and the job's workers
    (default ``sys.executable``). Raises ``cluster.spec.SpecError`` listing every
    problem of the spec.
    """
    from cluster.spec import load_spec

    spec = load_spec(spec_path).with_store(store)
    interpreter = _interpreter(python)
    Path(staging, SPEC_NAME).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    root = _project_dir()
    runtime_env = {
        "working_dir": str(staging),
        "py_modules": [str(root / m) for m in PROJECT_MODULES],
        "excludes": ["__pycache__", "*.pyc"],
        "py_executable": interpreter,
    }
    args = [interpreter, "-m", "jobs.cli", "run", SPEC_NAME, "--address", "auto"]
    if s3_endpoint:
        args += ["--s3-endpoint", s3_endpoint]
    return {
        "entrypoint": shlex.join(args),
        "runtime_env": runtime_env,
        "submission_id": submission_id,
        "metadata": {"gangeo_run": spec.name, "gangeo_store": spec.store,
                     "gangeo_spec_sha256": spec_digest(spec.to_dict())},
    }


def _interpreter(python: str | None) -> str:
    if python is None:
        return sys.executable
    if not isinstance(python, str) or not python.strip() or "\n" in python:
        raise SubmitError(f"--python: expected an interpreter path or command on the head, got {python!r}")
    return python


def spec_digest(spec: dict) -> str:
    """sha256 of a validated spec (canonical JSON): what tells a resubmission from a different job."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def _client(address: str, client=None):
    if client is not None:
        return client
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # Ray raises ConnectionError, ValueError, RuntimeError or AuthenticationError
        hint = ""
        if type(exc).__name__ == "AuthenticationError":
            hint = " (token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        raise SubmitError(f"cannot reach the Ray job server at {address}: {type(exc).__name__}{hint}") from None


JOB_SERVER_HELP = ("the Ray job server (dashboard) URL, e.g. http://HEAD:8265; "
                   "not the cluster's host:port that `gangeo run --address` takes")

# How long a submission waits for a freshly started head's job agent.
AGENT_WAIT_S = 60.0


def submit_job(
    spec_path: str | os.PathLike,
    address: str,
    *,
    store: str | None = None,
    s3_endpoint: str | None = None,
    submission_id: str | None = None,
    python: str | None = None,
    client=None,
) -> dict:
    """Validate ``spec_path`` and submit it as a Ray job at ``address``.

    Returns ``{"job_id", "already_existed", "run", "store"}``. A fixed
    ``submission_id`` is idempotent: if Ray already holds a job of that id with
    the same spec, that job is reported (``already_existed: True``); with another
    spec, :class:`SubmitError`. ``client``: a ``JobSubmissionClient`` (or a
    stand-in with ``submit_job`` and ``get_job_info``) to use instead of
    connecting to ``address``.
    """
    staging = tempfile.mkdtemp(prefix="gangeo-job-")
    try:
        request = build_submission(spec_path, staging, store=store, s3_endpoint=s3_endpoint,
                                   submission_id=submission_id, python=python)
        jsc = _client(address, client)
        meta = request["metadata"]
        out = {"job_id": None, "already_existed": False, "run": meta["gangeo_run"], "store": meta["gangeo_store"]}
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                return {**out, "job_id": jsc.submit_job(**request)}
            except Exception as exc:  # the SDK raises RuntimeError with the server's text
                text = str(exc).strip().splitlines()
                # A head that just started has no job agent yet and says to try again later.
                if any("No available agent" in t for t in text) and time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                if submission_id is not None and any("already exists" in t for t in text):
                    _same_job(jsc, submission_id, meta, address)
                    return {**out, "job_id": submission_id, "already_existed": True}
                line = text[0] if text else type(exc).__name__
                raise SubmitError(f"submission to {address} refused: {line.strip()}") from None
    finally:
        # Ray has uploaded the working directory by now; the local copy is not needed.
        shutil.rmtree(staging, ignore_errors=True)


def _same_job(jsc, submission_id: str, meta: dict, address: str) -> None:
    """Nothing if the job ``submission_id`` at ``address`` was submitted with this spec, else SubmitError."""
    try:
        held = dict(jsc.get_job_info(submission_id).metadata or {})
    except Exception as exc:
        raise SubmitError(f"submission id {submission_id!r} already exists at {address} but cannot be read: "
                          f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0]}") from None
    if held.get("gangeo_spec_sha256") != meta["gangeo_spec_sha256"]:
        raise SubmitError(f"submission id {submission_id!r} already names a job at {address} with a different "
                          f"spec (run {held.get('gangeo_run')!r}, store {held.get('gangeo_store')!r}); "
                          "choose another --submission-id")


def submit_spec(spec_path: str | os.PathLike, address: str, **kwargs) -> str:
    """:func:`submit_job`, returning only the job id (keywords as there)."""
    return submit_job(spec_path, address, **kwargs)["job_id"]


def job_status(job_id: str, address: str, *, client=None) -> dict:
    """The job's status, message and metadata as a small dict."""
    jsc = _client(address, client)
    try:
        info = jsc.get_job_info(job_id)
    except Exception as exc:
        raise SubmitError(f"no job {job_id!r} at {address}: {str(exc).strip().splitlines()[0:1]}") from None
    status = getattr(info.status, "value", str(info.status))
    return {"job_id": job_id, "status": str(status), "message": info.message or "",
            "metadata": dict(info.metadata or {}), "entrypoint": info.entrypoint}


def follow_job(job_id: str, address: str, *, out=sys.stderr, client=None) -> dict:
    """Stream the job's logs to ``out`` until it ends; return its final status."""
    jsc = _client(address, client)

    async def tail() -> None:
        async for lines in jsc.tail_job_logs(job_id):
            out.write(lines)
            out.flush()

    asyncio.run(tail())
    return job_status(job_id, address, client=jsc)


def _cmd_submit(args: argparse.Namespace) -> int:
    out = submit_job(args.spec, args.address, store=args.store, s3_endpoint=args.s3_endpoint,
                     submission_id=args.submission_id, python=args.python)
    print_json(out)
    return 0


def show_job(job_id: str, address: str, *, follow: bool) -> int:
    """Print a job's status as one JSON line (after its logs, with ``follow``); exit 1 if it failed or stopped.

    The one job-status path: ``gangeo job-status`` and ``gangeo status RUN --address`` both end here.
    """
    info = follow_job(job_id, address) if follow else job_status(job_id, address)
    print_json(info, indent=None)
    return 1 if info["status"] in ("FAILED", "STOPPED") else 0


def _cmd_job_status(args: argparse.Namespace) -> int:
    return show_job(args.job_id, args.address, follow=args.follow)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``submit SPEC --address URL`` and ``job-status JOB_ID --address URL [--follow]``."""
    p = subparsers.add_parser("submit", help="submit a sweep spec as a Ray job to a cluster")
    p.add_argument("spec", help="sweep spec (YAML); validated before submission")
    p.add_argument("--address", required=True, metavar="JOB_SERVER", help=JOB_SERVER_HELP)
    p.add_argument("--store", default=None, help="store URL overriding the spec's (use s3:// on a cluster)")
    p.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL the job should use")
    p.add_argument("--submission-id", default=None,
                   help="fixed job id: resubmitting the same spec reports the existing job; "
                        "another spec under a taken id is refused")
    p.add_argument("--python", default=None, metavar="PATH",
                   help="interpreter on the head that has the project's dependencies, for the entrypoint "
                        "and the job's workers (default: the submitting interpreter, sys.executable)")
    p.set_defaults(func=_cmd_submit)
    s = subparsers.add_parser("job-status", help="status of a submitted job (with --follow: stream its logs)")
    s.add_argument("job_id", help="job id printed by `gangeo submit`")
    s.add_argument("--address", required=True, metavar="JOB_SERVER", help=JOB_SERVER_HELP)
    s.add_argument("--follow", action="store_true", help="stream logs until the job ends")
    s.set_defaults(func=_cmd_job_status)
