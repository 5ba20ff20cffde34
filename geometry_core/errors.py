"""The project's exceptions: one root, one subclass per kind, each a one-line message.

Every error a user can cause derives from :class:`GangeoError`; its ``kind``
names what went wrong and the ``gangeo`` command line maps the kind to an exit
code (ARCHITECTURE.md, "Errors"). Anything else that escapes is a bug. This
module is the lowest layer, so the root lives here; the kinds of the upper
layers subclass it where they are raised (``cluster.storage.StoreError``,
``cluster.spec.SpecError``, ``jobs.submit.SubmitError``, ...).
"""

import reprlib

__all__ = [
    "ECHO_LIMIT",
    "GangeoError",
    "GeometryError",
    "MissingWeightsError",
    "UnsafeCheckpointError",
    "UsageError",
    "WeightsError",
    "clip",
]

# Characters of user input that an error message echoes: a 30 MB string or an
# expanded YAML alias bomb must not become a 30 MB line on stderr.
ECHO_LIMIT = 200
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 4, ECHO_LIMIT, ECHO_LIMIT, 60


def clip(value: object, limit: int = ECHO_LIMIT, *, bare: bool = False) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters (bounded work on huge input).

    ``bare``: a string as itself, not its repr (a key or a path in a message).
    Example: ``clip("x" * 10**7)`` -> ``"'xxx…' (10000000 characters)"``.
    """
    text = value if bare and isinstance(value, str) else _REPR.repr(value)
    if isinstance(value, str) and len(value) > limit:
        text = f"{text[:limit]}... ({len(value)} characters)"
    elif len(text) > limit:
        text = text[:limit] + "..."
    return text


class GangeoError(Exception):
    """Root of the project's errors; ``kind`` decides the command line's exit code."""

    kind = "error"


class GeometryError(GangeoError, ValueError):
    """Bad input to a public function of geometry_core (one clear line)."""

    kind = "geometry"


class UsageError(GeometryError):
    """A command-line argument or input file that cannot be used (one clear line)."""

    kind = "usage"


class WeightsError(GeometryError):
    """Model weights that cannot be loaded: absent, or needing code to unpickle."""

    kind = "weights"


class MissingWeightsError(WeightsError, FileNotFoundError):
    """A weight file that must exist locally does not."""


class UnsafeCheckpointError(WeightsError):
    """A checkpoint that would need pickled code to load; it is refused."""
