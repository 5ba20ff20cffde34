"""The project's exceptions: one root, one subclass per kind, each a one-line message.

Every error a user can cause derives from :class:`GangeoError`; its ``kind``
names what went wrong and the ``gangeo`` command line maps the kind to an exit
code (ARCHITECTURE.md, "Errors"). Anything else that escapes is a bug. This
module is the lowest layer, so the root lives here; the kinds of the upper
layers subclass it where they are raised (``cluster.storage.StoreError``,
``cluster.spec.SpecError``, ``jobs.submit.SubmitError``, ...).
"""

__all__ = [
    "GangeoError",
    "GeometryError",
    "MissingWeightsError",
    "UnsafeCheckpointError",
    "UsageError",
    "WeightsError",
]


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
