"""A stand-in for Ray's ``JobSubmissionClient``, for the submit and schedule tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import yaml

__all__ = ["FakeJobClient", "LineSink"]


class LineSink:
    """A text stream that keeps what is written, one ``write`` per entry of ``lines``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, s: str) -> None:
        self.lines.append(s)

    def flush(self) -> None:
        pass


class FakeJobClient:
    """Records submissions; refuses a duplicate submission id and answers job info as Ray's job server does.

    ``on_submit(client, job_id, request)``, if set, runs inside ``submit_job`` while the
    staged working directory still exists (as Ray uploads it then). New jobs take
    the status ``initial_status``; a test moves them on through ``status``.
    """

    def __init__(self, on_submit=None, initial_status: str = "SUCCEEDED") -> None:
        self.requests: list[dict] = []
        self.staged_specs: list[dict] = []
        self.accepted: list[str] = []
        self.metadata: dict[str, dict] = {}
        self.status: dict[str, str] = {}
        self.on_submit, self.initial_status = on_submit, initial_status

    def submit_job(self, *, entrypoint, runtime_env, submission_id=None, metadata=None, **_):
        if submission_id is not None and submission_id in self.accepted:
            raise RuntimeError(f"Request failed with status code 400: Job with submission_id "
                               f"{submission_id} already exists. Please use a different submission_id.")
        staged = Path(runtime_env["working_dir"], "spec.yaml")
        self.staged_specs.append(yaml.safe_load(staged.read_text()))
        request = {"entrypoint": entrypoint, "runtime_env": runtime_env, "submission_id": submission_id,
                   "metadata": metadata}
        self.requests.append(request)
        job = submission_id or f"raysubmit_{len(self.accepted)}"
        self.accepted.append(job)
        self.metadata[job], self.status[job] = dict(metadata or {}), self.initial_status
        if self.on_submit is not None:
            self.on_submit(self, job, request)
        return job

    def get_job_info(self, job_id):
        if job_id not in self.metadata:
            raise RuntimeError(f"Request failed with status code 404: Job {job_id} does not exist.")
        return SimpleNamespace(status=self.status[job_id], message="", metadata=self.metadata[job_id],
                               entrypoint="")
