"""gan-geometry's mathematics: generators, distances, the metric tensor and its spectrum.

Example::

    import geometry_core as gc
    G = gc.load_generator("dcgan-faces")
    d = gc.load_distance("mse")
    z = G.sample(4, seed=0)
    H = gc.metric_tensor(G, d, z)          # (4, 100, 100)
    eigvals, eigvecs = gc.eigen(H)
    gc.anisotropy(eigvals)

Nothing here imports Ray, Zarr or boto3.
"""

from importlib import import_module

__all__ = [
    "Distance",
    "GeometryError",
    "Generator",
    "MissingWeightsError",
    "UnsafeCheckpointError",
    "anisotropy",
    "eigen",
    "global_metric",
    "cma_search",
    "homogeneity",
    "hvp",
    "invert",
    "list_distances",
    "list_generators",
    "load_distance",
    "load_generator",
    "metric_tensor",
    "metric_tensors",
    "null_space",
    "register_distance",
    "register_generator",
]

import sys  # noqa: E402
import types  # noqa: E402


class _Package(types.ModuleType):
    """`homogeneity` names both a function and its submodule. Importing the submodule binds it
    on the package, over the function; a data descriptor wins over that binding, so
    ``gc.homogeneity`` stays the function and is imported (with torch) only when first used."""

    @property
    def homogeneity(self):
        return import_module(".homogeneity", __name__).homogeneity

    @homogeneity.setter
    def homogeneity(self, _module) -> None:  # the import system binding the submodule: ignored
        pass


sys.modules[__name__].__class__ = _Package

# Attribute -> submodule; imported on first use so `import geometry_core` stays cheap.
_WHERE = {
    "Distance": "distances",
    "GeometryError": "errors",
    "Generator": "generators",
    "MissingWeightsError": "errors",
    "UnsafeCheckpointError": "errors",
    "anisotropy": "spectrum",
    "eigen": "spectrum",
    "cma_search": "search",
    "global_metric": "homogeneity",
    "invert": "inversion",
    "homogeneity": "homogeneity",
    "hvp": "metric",
    "list_distances": "distances",
    "list_generators": "generators",
    "load_distance": "distances",
    "load_generator": "generators",
    "metric_tensor": "metric",
    "metric_tensors": "metric",
    "null_space": "spectrum",
    "register_distance": "distances",
    "register_generator": "generators",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'geometry_core' has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)


def __dir__():
    return sorted(__all__)
