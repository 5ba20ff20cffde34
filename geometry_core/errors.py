"""The library's exceptions: each says what was expected and what arrived."""

__all__ = ["GeometryError", "MissingWeightsError", "UnsafeCheckpointError"]


class GeometryError(ValueError):
    """Bad input to a public function of geometry_core (one clear line)."""


class MissingWeightsError(GeometryError, FileNotFoundError):
    """A weight file that must exist locally does not."""


class UnsafeCheckpointError(GeometryError):
    """A checkpoint that would need pickled code to load; it is refused."""
