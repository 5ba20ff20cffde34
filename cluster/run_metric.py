"""A stored run's global metric, for commands that would otherwise compute one
(`gangeo axes`, `invert`, `search` with ``--metric run:NAME[/group]``).

Example::

    from cluster.run_metric import load_run_metric
    m = load_run_metric("run:quickstart", store="./gangeo-results", generator="dcgan-faces",
                        space="z", dim=100, distance="mse")
    m.eigvals, m.eigvecs          # float64 tensors (D,), (D, D): reduce/global_eigvals, global_eigvecs
    m.key                         # "dcgan-faces/z/mse", the group it came from
    m.target                      # "mse": the distance it was computed with, which the command measures with
    m.codes, m.codes_used         # 64, 48: the metric averages the 48 codes whose chunk was done

The group is the one named after the slash, else the run's group of that generator and
space (the one whose target is ``distance`` when there are several). The metric is used
only for the generator it was computed for: the group's spec entry must name the same
generator with no option that changes its function (shuffled weights, another
checkpoint), in the same latent space and dimension. A mismatch, an unknown group or an
ambiguous choice is a :class:`~geometry_core.errors.UsageError` (exit 2); a run without a
complete ``reduce/global_eigvecs`` a :class:`~cluster.storage.StoreError` (exit 5).
The eigenvectors are the stored ones (columns, descending; ARCHITECTURE.md "Mathematics"),
never re-decomposed. A command measures with the group's own distance: ``--distance`` given
and naming another one is refused (:func:`check_distance`, exit 2), so an eigenframe of LPIPS
is never calibrated with MSE steps. The metric averages only the codes whose chunk was
done when the run was reduced; ``codes_not_done`` says how many it leaves out. A run being grown or
deleted is refused (:func:`cluster.view.open_run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geometry_core.errors import GangeoError, UsageError, clip

from .layout import GroupLayout, safe_name, spec_generators
from .storage import StoreError

__all__ = ["PREFIX", "StoredMetric", "check_distance", "is_run_ref", "load_run_metric", "parse_run_ref"]

PREFIX = "run:"
# Generator options that move or cast it without changing the function it computes.
_NEUTRAL_OPTIONS = frozenset({"device", "dtype"})


@dataclass(frozen=True)
class StoredMetric:
    """The reduced global metric of one group of a stored run."""

    run: str
    key: str
    eigvals: torch.Tensor  # (D,) float64, descending
    eigvecs: torch.Tensor  # (D, D) float64, columns
    target: str = ""       # the distance the group was computed with (its layout's target)
    codes: int | None = None       # the group's codes (reduce/ attrs ``n_codes``; None: not recorded)
    codes_used: int | None = None  # those the metric averages: codes whose chunk was done (``n_used``)

    @property
    def codes_not_done(self) -> int:
        """Codes of the group the metric leaves out because their chunk was not done when it was reduced."""
        return 0 if self.codes is None or self.codes_used is None else self.codes - self.codes_used

    def describe(self) -> dict:
        return {"run": self.run, "group": self.key}


def is_run_ref(text: str | None) -> bool:
    return isinstance(text, str) and text.startswith(PREFIX)


def parse_run_ref(text: str) -> tuple[str, str | None]:
    """``run:NAME[/model/space/target]`` -> (NAME, group key or None); the name obeys the run-name rule."""
    from .spec import check_run_name

    run, _, group = text[len(PREFIX):].partition("/")
    check_run_name(run, what=f"--metric {clip(text, bare=True)}: the run")
    return run, group or None


def _choose(ref: str, run: str, keys: list[str], group: str | None, generator: str, space: str,
            distance: str | None, entries: dict) -> str:
    if group is not None:
        if group not in keys:
            raise UsageError(f"--metric {clip(ref, bare=True)}: run {run!r} has no group {clip(group)}; "
                             f"its groups: {keys}")
        return group
    mine = [k for k in keys if len(k.split("/")) == 3 and k.split("/")[1] == space
            and entries.get(k.split("/")[0], (k.split("/")[0], {}))[0] == generator]
    if len(mine) > 1 and distance is not None:
        mine = [k for k in mine if k.split("/")[2] == safe_name(distance)] or mine
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise UsageError(f"--metric {clip(ref, bare=True)}: run {run!r} has no group of generator {generator!r} "
                         f"in space {space!r}; its groups: {keys}")
    raise UsageError(f"--metric {clip(ref, bare=True)}: several groups of run {run!r} match; "
                     f"name one as run:{run}/<group>: {mine}")


def _check_generator(ref: str, run: str, lay: GroupLayout, entries: dict, generator: str, space: str,
                     dim: int) -> None:
    name, options = entries.get(lay.model, (lay.model, {}))
    changing = {k: v for k, v in options.items() if k not in _NEUTRAL_OPTIONS}
    if name != generator or changing:
        what = f"{name!r}" + (f" with options {clip(changing)}" if changing else "")
        raise UsageError(f"--metric {clip(ref, bare=True)}: group {lay.key} of run {run!r} was computed for "
                         f"generator {what}; this command uses {generator!r}")
    if lay.space != space or lay.dim != dim:
        raise UsageError(f"--metric {clip(ref, bare=True)}: group {lay.key} is latent space {lay.space!r} of "
                         f"dimension {lay.dim}; this command uses space {space!r} of dimension {dim}")


def _read_global(run: str, key: str, group, dim: int) -> tuple[np.ndarray, np.ndarray, dict]:
    from .view import reduce_state

    red: Any = group["reduce"] if reduce_state(group) == "complete" else None  # None: no names, raised below
    names = set(red.array_keys()) if red is not None else set()
    if not {"global_eigvals", "global_eigvecs"} <= names:
        raise StoreError(f"run {run!r} group {key} has no reduced global metric; run `gangeo reduce {run}` first")
    vals, vecs = np.asarray(red["global_eigvals"][:]), np.asarray(red["global_eigvecs"][:])
    if vals.shape != (dim,) or vecs.shape != (dim, dim) or not (np.isfinite(vals).all() and np.isfinite(vecs).all()):
        raise StoreError(f"run {run!r} group {key}: reduce/global_eigvals and global_eigvecs must be finite, of "
                         f"shapes ({dim},) and ({dim}, {dim}); got {vals.shape} and {vecs.shape}; "
                         f"run `gangeo reduce {run}`")
    return vals, vecs, dict(red.attrs)


def load_run_metric(ref: str, *, store=None, s3_endpoint: str | None = None, generator: str, space: str | None,
                    dim: int, distance: str | None = None) -> StoredMetric:
    """The global metric ``ref`` (``run:NAME[/group]``) names, checked against the command's generator.

    ``space``: the command's latent space (None: the generator's first, as ``load_generator``).
    """
    from geometry_core.generators import list_generators

    from .store import RunStore
    from .view import open_run

    if space is None:
        space = list_generators()[generator][0][0]
    run, group = parse_run_ref(ref)
    rs = RunStore(store, s3_endpoint=s3_endpoint, mode="r", create=False)
    view = open_run(rs.root, run)
    attrs = view.attrs
    keys = list(attrs.get("groups") or [])
    entries = spec_generators(attrs.get("spec"))
    key = _choose(ref, run, keys, group, generator, space, distance, entries)
    g = rs.group(run, key)
    lay = GroupLayout.of(g)
    _check_generator(ref, run, lay, entries, generator, space, dim)
    vals, vecs, red = _read_global(run, key, g, dim)

    def count(name: str) -> int | None:
        return int(red[name]) if isinstance(red.get(name), int) else None

    return StoredMetric(run, key, torch.from_numpy(vals.astype(np.float64)), torch.from_numpy(vecs.astype(np.float64)),
                        lay.target, codes=count("n_codes"), codes_used=count("n_used"))


def check_distance(ref: str, stored: StoredMetric, distance, *, generator) -> None:
    """Refuse a loaded ``distance`` (a command's explicit ``--distance``) other than ``stored``'s.

    Names are compared as the registry resolves them (``lpips`` is ``lpips-alex``), so an alias
    of the group's own distance passes.
    """
    from geometry_core import load_distance

    if distance.name == stored.target:
        return
    try:
        same = load_distance(stored.target, generator=generator).name == distance.name
    except GangeoError:  # a target this install cannot load is not the one asked for
        same = False
    if not same:
        raise UsageError(f"--distance {clip(distance.name, bare=True)}: --metric {clip(ref, bare=True)} is group "
                         f"{stored.key}, computed with {clip(stored.target)}; leave --distance out to measure with "
                         f"it, or name a group of that distance")
