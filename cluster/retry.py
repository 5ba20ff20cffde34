"""Retry store writes on transient errors: exponential backoff with full jitter, bounded.

Example::

    from cluster.retry import RetryPolicy, retry_call
    policy = RetryPolicy(attempts=6, base=0.2, cap=5.0, deadline=60.0)
    value = retry_call(lambda: array.__setitem__(rows, data), policy=policy, what="z chunk 3")

Transient: connection failures and timeouts, S3 throttling (503 SlowDown) and
server errors (500, 502, 503, 504). Anything else (403, a missing bucket or key,
a bad argument) is raised at once. ``policy.retries`` counts the retries made, so
that a worker can report how many faults it survived.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field

from .storage import StoreError

__all__ = ["RetryPolicy", "is_transient", "retry_call"]

_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                    "InternalError", "ServiceUnavailable", "500", "502", "503", "504"}
_TRANSIENT_STATUS = {500, 502, 503, 504}
# Messages of errors that botocore / aiohttp / s3fs raise for a dropped or refused connection.
_TRANSIENT_TEXT = re.compile(
    r"slow ?down|service unavailable|internal ?error|bad gateway|gateway time-?out|connection (was )?(reset|"
    r"refused|closed|aborted)|server disconnected|cannot connect|could not connect|timed? ?out|"
    r"please reduce your request rate|\b50[0234]\b", re.IGNORECASE)


def _status_of(exc: BaseException) -> tuple[str, int | None]:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        return code, response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return "", getattr(exc, "status", None) if isinstance(getattr(exc, "status", None), int) else None


def is_transient(exc: BaseException | None) -> bool:
    """True for errors worth retrying: connections, timeouts, throttling and 5xx responses."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # s3fs wraps botocore errors: walk the causes
        seen.add(id(exc))
        if isinstance(exc, (PermissionError, FileNotFoundError, FileExistsError, IsADirectoryError,
                            NotADirectoryError, TypeError, KeyError)):
            return False
        if isinstance(exc, StoreError):
            return bool(exc.transient)
        code, status = _status_of(exc)
        if code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS:
            return True
        if code or status:
            return False  # an HTTP answer that is not transient: 403, 404, 400
        name = type(exc).__name__
        if isinstance(exc, (ConnectionError, TimeoutError)) or any(
                s in name for s in ("Connection", "Timeout", "Disconnected", "EndpointConnection")):
            return True
        if isinstance(exc, OSError) and _TRANSIENT_TEXT.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass
class RetryPolicy:
    """At most ``attempts`` tries within ``deadline`` seconds; sleeps ``U(0, min(cap, base * 2**k))``."""

    attempts: int = 8
    base: float = 0.2
    cap: float = 5.0
    deadline: float = 90.0
    retries: int = field(default=0, compare=False)
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0.0, min(self.cap, self.base * 2 ** attempt))


def retry_call(fn, *, policy: RetryPolicy | None = None, what: str = "store write"):
    """``fn()``, retried on transient errors; the last error is raised when attempts or time run out."""
    policy = policy or RetryPolicy()
    start = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            attempt += 1
            if not is_transient(exc) or attempt >= policy.attempts:
                raise
            pause = policy.delay(attempt - 1)
            if time.monotonic() - start + pause > policy.deadline:
                raise
            policy.retries += 1
            time.sleep(pause)
