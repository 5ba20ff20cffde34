"""A real S3 endpoint for tests: moto's server on 127.0.0.1, reached over HTTP.

Usage in a test module::

    def test_x(s3_server): ...     # the session fixture, through tests/conftest.py

    def test_x(s3_server):
        url = s3_server.new_bucket("results")       # "s3://results"
        ...  # AWS_* variables already point at the server

The fixture sets dummy credentials, region us-east-1, the endpoint and
``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` in ``os.environ`` for the
whole session (Ray workers inherit them through ``cluster.storage.store_env``)
and restores the previous values at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import urllib.request
import uuid

import pytest

__all__ = ["S3Server", "s3_server"]

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}


class S3Server:
    """moto's ThreadedMotoServer on a free loopback port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def start(self) -> "S3Server":
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def env(self) -> dict[str, str]:
        """The variables that point boto3 / s3fs at this server with dummy credentials."""
        return {**DUMMY_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def _post(self, path: str, body: bytes = b"") -> bytes:
        # Not form-encoded: moto reads the raw body of /moto-api/reset-auth.
        req = urllib.request.Request(
            self.endpoint + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read()

    def reset(self) -> None:
        """Forget every bucket and object."""
        self._post("/moto-api/reset")

    def client(self, service: str = "s3", **creds):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1", **creds)

    def new_bucket(self, prefix: str = "gangeo") -> str:
        """Create a fresh bucket and return its ``s3://`` URL."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, url: str) -> list[str]:
        """Every object key under an ``s3://bucket[/prefix]`` URL."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    @contextlib.contextmanager
    def enforce_auth(self):
        """Check signatures against moto's IAM; yields (key id, secret) of an allowed user."""
        iam = self.client("iam")
        user = f"u{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        previous = json.loads(self._post("/moto-api/reset-auth", b"0"))
        try:
            yield key["AccessKeyId"], key["SecretAccessKey"]
        finally:
            count = previous.get("PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
            self._post("/moto-api/reset-auth", str(count).encode())


@pytest.fixture(scope="session")
def s3_server():
    """A running moto S3 server with the AWS_* environment pointing at it."""
    server = S3Server().start()
    saved = {k: os.environ.get(k) for k in [*server.env(), "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"]}
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(server.env())
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
