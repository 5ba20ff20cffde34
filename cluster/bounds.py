"""What a planned run asks for, checked against its generators and the cluster before anything is written.

Example::

    check_before_ray(spec, distances=True)                # layer names, codes width, distances: no worker
    check_plan(spec, [(gen, layout, layer_names), ...])   # memory, stored bytes, topk, layers
    check_resources(spec, ray.nodes())                     # a worker must fit on some node

The spec alone bounds its numbers (:data:`cluster.spec.LIMITS`); these checks
need the latent size and layer names the workers report (``describe``) and the
cluster's nodes, so the driver runs them after planning and before it creates
the run (ARCHITECTURE.md, "Limits"). Each failure is one :class:`SpecError` line.
:func:`check_before_ray` makes those that need no worker in the driver, before Ray starts
(seconds instead of a Ray start-up): it loads a generator on the CPU only when a
``layer:`` target or a codes file needs its layers or latent size.
"""

from __future__ import annotations

from collections.abc import Iterable

from geometry_core.errors import GangeoError, GeometryError, WeightsError, clip

from .layout import safe_name
from .s3_checkpoints import local_options
from .spec import ALL_LAYERS, LIMITS, SpecError, SweepSpec

__all__ = ["check_before_ray", "check_plan", "check_resources", "chunk_bytes", "stored_bytes", "targets_per_task"]

_F32, _F64 = 4, 8


def chunk_bytes(spec: SweepSpec, dim: int) -> int:
    """Memory one chunk task needs at least: its D x D arrays and the codes it draws.

    The metric, its eigenvectors and their float32 copies (four D x D arrays per
    code), plus all ``n`` codes in float64: a chunk draws the run's codes from
    the seed and keeps its rows, so every chunk's codes are the same on any worker.
    """
    return spec.chunk_size * dim * dim * _F32 * 4 + spec.n_codes * dim * _F64


def targets_per_task(spec: SweepSpec, dim: int) -> int:
    """How many targets one chunk task may carry within the chunk memory limit (at least one).

    Targets sharing a task share its codes but each holds its own four D x D arrays per code.
    """
    per_target = spec.chunk_size * dim * dim * _F32 * 4
    return max(1, (LIMITS["chunk_bytes"] - spec.n_codes * dim * _F64) // per_target)


def stored_bytes(spec: SweepSpec, dim: int) -> int:
    """Bytes one group of the run stores (z, eigvals, and eigvecs/hessian when kept), uncompressed."""
    square = int(spec.keep_eigvecs) + int(spec.keep_hessian)
    return spec.n_codes * (dim * _F32 + dim * _F64 + square * dim * dim * _F32)


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_plan(spec: SweepSpec, groups: Iterable[tuple[str, int, str, list[str]]]) -> None:
    """Refuse a plan that its generators cannot serve or that exceeds the limits.

    ``groups``: (group key, latent size D, target, the layer names the
    generator lacks) for each group of the run.
    """
    problems: list[str] = []
    total = 0
    for key, dim, target, missing in groups:
        if spec.topk is not None:
            lanczos = spec.method.startswith("lanczos")
            top = dim - 1 if lanczos else dim
            if spec.topk > top:
                problems.append(f"topk: {spec.topk} eigenpairs asked, {key} has a {dim}-d latent space "
                                f"({spec.method} allows at most {top})")
        if target.startswith("layer:") and target[len("layer:"):] in missing:
            problems.append(f"targets: {key.split('/')[0]} has no layer {clip(target[len('layer:'):])}")
        need = chunk_bytes(spec, dim)
        if need > LIMITS["chunk_bytes"]:
            problems.append(f"chunk_size: a chunk of {key} needs about {_gib(need)} of memory "
                            f"({spec.chunk_size} codes x {dim}^2 arrays, {spec.n_codes} codes drawn), "
                            f"over the limit of {_gib(LIMITS['chunk_bytes'])}; lower chunk_size or codes.n")
        total += stored_bytes(spec, dim)
    if total > LIMITS["stored_bytes"]:
        problems.append(f"codes.n: the run would store about {_gib(total)}, over the limit of "
                        f"{_gib(LIMITS['stored_bytes'])}; lower codes.n or keep fewer arrays")
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))


def check_resources(spec: SweepSpec, nodes: list[dict]) -> None:
    """Refuse a worker that no live node can hold (Ray would wait for one forever).

    ``nodes``: ``ray.nodes()`` (each with ``Alive`` and ``Resources``).
    """
    res = spec.resources
    want = {"CPU": float(res["cpus_per_worker"]), "GPU": float(res["gpus_per_worker"])}
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    if any(all(r.get(k, 0.0) >= v for k, v in want.items() if v > 0) for r in alive):
        return
    most = {k: max((r.get(k, 0.0) for r in alive), default=0.0) for k in want}
    short = [k for k, v in want.items() if v > most[k]]
    detail = ", ".join(f"{want[k]:g} {k}s per worker asked, the largest node has {most[k]:g}" for k in short)
    raise SpecError([f"resources: no node can hold a worker ({detail or 'no node offers both'}); "
                     "lower resources.cpus_per_worker / gpus_per_worker"])


def _loaded(what: str, load):
    """``load()``; a failure becomes one line naming ``what``, of its kind (weights keep theirs)."""
    try:
        return load()
    except GangeoError as exc:  # as a worker's failure reads (cluster.driver._ask)
        kind = type(exc) if isinstance(exc, WeightsError) else GeometryError
        raise kind(f"{what}: {' '.join(str(exc).split())}") from None
    except Exception as exc:  # an import path or a checkpoint that fails as code does
        raise GeometryError(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())}") from None


def check_before_ray(spec: SweepSpec, *, distances: bool) -> None:
    """The checks that need no worker, in this process: one line per problem, before Ray starts.

    Every ``layer:`` target on every generator and space (a missing one is named with the
    generator's layers), a codes file's width against every latent size, and, with
    ``distances`` (workers on this machine: embedded Ray), every image distance loads.
    """
    import geometry_core as gc

    layers = [t[len("layer:"):] for t in spec.targets if t.startswith("layer:")]
    problems, wrong = [], []
    if layers or spec.codes_file:
        for gen in spec.generators:
            for space in gen.spaces:
                G = _loaded(f"generator {gen.name!r} ({space})",
                            lambda: gc.load_generator(gen.name, space=space, **local_options(gen.options)))
                modules = {name for name, _ in G.module.named_modules()}
                for name in layers:
                    if name not in modules:
                        problems.append(f"targets: {gen.label} has no layer {clip(name)}; its layers: "
                                        f"{', '.join(G.layer_names) or 'none'}")
                if spec.codes_dim is not None and spec.codes_dim != G.latent_dim:
                    targets = [f"layer:{n}" for n in G.layer_names] if ALL_LAYERS in spec.targets else []
                    wrong += [f"{gen.label}/{space}/{safe_name(t)} ({G.latent_dim}-d)"
                              for t in [*targets, *(t for t in spec.targets if t != ALL_LAYERS)]]
                del G
    if wrong:
        problems.append(f"codes.file: {spec.codes_file} holds {spec.codes_dim}-d codes; expected the latent "
                        f"size of every group: {', '.join(sorted(set(wrong)))}")
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    if distances:
        for t in spec.targets:
            if t != ALL_LAYERS and not t.startswith("layer:"):
                _loaded(f"targets: {t}", lambda: gc.load_distance(t))
