"""`gangeo submit SPEC --address http://HEAD:8265`: a sweep as a Ray job; `gangeo job-status` follows it.

Example::

    gangeo submit jobs/examples/quickstart.yaml --address http://head:8265 --store s3://bucket/runs
    gangeo job-status quickstart-20260101T0000 --address http://head:8265 --follow

The spec is validated here first; nothing is submitted if it has a problem.
The job's runtime environment carries the project (``geometry_core``,
``cluster`` and ``jobs`` as ``py_modules``) and a working directory holding only
the validated spec, so the head needs the project's dependencies (torch, ray,
zarr, s3fs, gan-face-generate: ``ray-cluster.yaml``'s setup commands install
them) but not this checkout. The entrypoint runs in a shell on the head, so it
is ``python -m jobs.cli run spec.yaml --address auto``: ``python`` is the
interpreter Ray runs under there, and ``--address auto`` joins the cluster
instead of starting a private Ray.

Credentials never travel in the job request (Ray keeps it in the job's
metadata): the cluster's nodes reach S3 with their own role or environment;
only a non-secret endpoint URL is passed, as ``--s3-endpoint`` on the command
line. The job's runtime environment sets no ``env_vars``: Ray refuses a driver
whose ``ray.init(runtime_env=...)`` repeats a variable of the job's.
"""

from __future__ import annotations

import argparse
import asyncio
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
) -> dict:
    """Validate the spec and stage it; return the keyword arguments of ``JobSubmissionClient.submit_job``.

    ``staging``: an empty directory that becomes the job's working directory (it
    receives ``spec.yaml``, the validated spec with ``store`` applied).
    Raises ``cluster.spec.SpecError`` listing every problem of the spec.
    """
    from cluster.spec import load_spec

    spec = load_spec(spec_path).with_store(store)
    Path(staging, SPEC_NAME).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    root = _project_dir()
    runtime_env = {
        "working_dir": str(staging),
        "py_modules": [str(root / m) for m in PROJECT_MODULES],
        "excludes": ["__pycache__", "*.pyc"],
    }
    args = ["python", "-m", "jobs.cli", "run", SPEC_NAME, "--address", "auto"]
    if s3_endpoint:
        args += ["--s3-endpoint", s3_endpoint]
    return {
        "entrypoint": shlex.join(args),
        "runtime_env": runtime_env,
        "submission_id": submission_id,
        "metadata": {"gangeo_run": spec.name, "gangeo_store": spec.store},
    }


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


# How long a submission waits for a freshly started head's job agent.
AGENT_WAIT_S = 60.0


def submit_spec(
    spec_path: str | os.PathLike,
    address: str,
    *,
    store: str | None = None,
    s3_endpoint: str | None = None,
    submission_id: str | None = None,
    client=None,
) -> str:
    """Validate ``spec_path`` and submit it as a Ray job at ``address``; return the job id.

    A fixed ``submission_id`` makes the submission idempotent: Ray refuses a
    duplicate, which surfaces here as :class:`SubmitError`. ``client``: a
    ``JobSubmissionClient`` (or a stand-in with ``submit_job``) to use instead of
    connecting to ``address``.
    """
    staging = tempfile.mkdtemp(prefix="gangeo-job-")
    try:
        request = build_submission(spec_path, staging, store=store, s3_endpoint=s3_endpoint,
                                   submission_id=submission_id)
        jsc = _client(address, client)
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                return jsc.submit_job(**request)
            except Exception as exc:  # the SDK raises RuntimeError with the server's text
                text = str(exc).strip().splitlines()
                # A head that just started has no job agent yet and says to try again later.
                if any("No available agent" in t for t in text) and time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                line = next((t for t in text if "already exists" in t), text[0] if text else type(exc).__name__)
                raise SubmitError(f"submission to {address} refused: {line.strip()}") from None
    finally:
        # Ray has uploaded the working directory by now; the local copy is not needed.
        shutil.rmtree(staging, ignore_errors=True)


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
    job_id = submit_spec(args.spec, args.address, store=args.store, s3_endpoint=args.s3_endpoint,
                         submission_id=args.submission_id)
    print(job_id)
    return 0


def _cmd_job_status(args: argparse.Namespace) -> int:
    info = follow_job(args.job_id, args.address) if args.follow else job_status(args.job_id, args.address)
    print_json(info, indent=None)
    return 1 if info["status"] in ("FAILED", "STOPPED") else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``submit SPEC --address URL`` and ``job-status JOB_ID --address URL [--follow]``."""
    p = subparsers.add_parser("submit", help="submit a sweep spec as a Ray job to a cluster")
    p.add_argument("spec", help="sweep spec (YAML); validated before submission")
    p.add_argument("--address", required=True, help="Ray job server, e.g. http://HEAD:8265")
    p.add_argument("--store", default=None, help="store URL overriding the spec's (use s3:// on a cluster)")
    p.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL the job should use")
    p.add_argument("--submission-id", default=None, help="fixed job id: a duplicate is refused")
    p.set_defaults(func=_cmd_submit)
    s = subparsers.add_parser("job-status", help="status of a submitted job (with --follow: stream its logs)")
    s.add_argument("job_id", help="job id printed by `gangeo submit`")
    s.add_argument("--address", required=True, help="Ray job server, e.g. http://HEAD:8265")
    s.add_argument("--follow", action="store_true", help="stream logs until the job ends")
    s.set_defaults(func=_cmd_job_status)
