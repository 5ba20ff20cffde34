"""Sweep specs: YAML in, a validated :class:`SweepSpec` out.

Example::

    from cluster.spec import load_spec
    spec = load_spec("jobs/examples/quickstart.yaml")
    spec.n_codes, spec.method, spec.chunk_size

Every problem is collected and reported as one line naming its field
(``codes.n: expected a positive integer, got -3``); unknown keys are problems
too. Validation never writes anything.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from geometry_core.errors import GeometryError, UsageError, clip

from .executor import DEVICES as REDUCE_DEVICES
from .layout import default_label
from .reduce import REDUCER_TABLE
from .series import DEFAULT_OPTION, expand_series, series_label
from .spec_yaml import read_spec_yaml
from .storage import DEFAULT_STORE

__all__ = [
    "ALL_LAYERS",
    "DEFAULTS",
    "METHODS",
    "LIMITS",
    "GeneratorSpec",
    "SpecError",
    "SweepSpec",
    "check_run_name",
    "load_spec",
    "parse_spec",
]

METHODS = ("exact", "bp", "lanczos-backward", "lanczos-forward")
DEFAULT_SPACE = "default"
ALL_LAYERS = "layers:all"
# One source of defaults for the Python API and the CLI.
DEFAULTS: dict[str, Any] = {
    "store": DEFAULT_STORE,
    "codes": {"n": 64, "seed": 0},
    "method": "exact",
    "topk": None,
    "keep": {"hessian": False, "eigvecs": True},
    "chunk_size": 16,
    "reducers": dict.fromkeys(REDUCER_TABLE, True),
    # reduce_device: "auto" (homogeneity tiles on GPUs where the cluster has them) or "cpu".
    "resources": {"workers": None, "gpus_per_worker": 0, "cpus_per_worker": 1, "reduce_device": "auto"},
}
# What a run may ask for (ARCHITECTURE.md, "Limits"); checked before anything is written.
LIMITS: dict[str, int] = {
    "codes": 10**7,               # latent codes per (model, space, target)
    "seed": 2**63 - 1,            # numpy and torch seeds are below 2**63
    "chunk_size": 4096,           # codes per chunk
    "workers": 4096,
    "resources_per_worker": 1024,  # CPUs or GPUs one worker may ask for
    "chunk_bytes": 8 << 30,       # one chunk task's arrays in memory (cluster.bounds.chunk_bytes)
    "stored_bytes": 1 << 40,      # every array of a run together (1 TiB)
}
_TOP_KEYS = ("name", "store", "generators", "targets", "codes", "method", "topk", "keep",
             "chunk_size", "reducers", "resources")
# \Z, not $: "$" also matches before a final newline, and "trail\n" made a run directory
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_TARGET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-/\[\]]*\Z")


class SpecError(GeometryError):
    """A sweep spec with problems; ``problems`` holds one line per problem."""

    kind = "spec"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class GeneratorSpec:
    """One generator of a sweep: registry name, latent spaces, loader options.

    ``label`` names its groups in the store (default: the name, with
    ``-shuffled<seed>`` for a weight-shuffled control), so the same generator can
    appear twice, trained and shuffled. One checkpoint of a series
    (:mod:`cluster.series`) has its ``step``, the ``series`` mapping it came from
    and the series' label ``series_of``; its label is ``<series_of>-step<step>``.
    """

    name: str
    spaces: tuple[str, ...] = (DEFAULT_SPACE,)
    options: dict = field(default_factory=dict)
    label: str = ""
    series: dict | None = None
    step: int | None = None
    series_of: str = ""


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. ``identity()`` is what must match to resume a run."""

    name: str
    generators: tuple[GeneratorSpec, ...]
    targets: tuple[str, ...]
    n_codes: int
    seed: int
    store: str = DEFAULTS["store"]
    method: str = "exact"
    topk: int | None = None
    keep_hessian: bool = False
    keep_eigvecs: bool = True
    chunk_size: int = 16
    reducers: dict = field(default_factory=lambda: dict(DEFAULTS["reducers"]))
    resources: dict = field(default_factory=lambda: dict(DEFAULTS["resources"]))
    codes_file: str | None = None    # codes read from this .npy file (absolute path) instead of the seed
    codes_dim: int | None = None     # their dimension
    codes_sha256: str | None = None  # sha256 of the n codes (cluster.codes.codes_sha256)

    def codes(self) -> dict:
        """The codes section as the spec file gives it: ``{n, seed}`` or ``{file}``."""
        return {"file": self.codes_file} if self.codes_file else {"n": self.n_codes, "seed": self.seed}

    def series(self) -> dict[str, list["GeneratorSpec"]]:
        """Series label -> its checkpoints' generators in step order (none for a spec without series)."""
        out: dict[str, list[GeneratorSpec]] = {}
        for g in self.generators:
            if g.series is not None:
                out.setdefault(g.series_of, []).append(g)
        return out

    def to_dict(self) -> dict:
        """The spec in its YAML form (round-trips through :func:`parse_spec`); a series as its pattern."""
        return {
            "name": self.name,
            "store": self.store,
            "generators": _generator_dicts(self.generators),
            "targets": list(self.targets),
            "codes": self.codes(),
            "method": self.method,
            "topk": self.topk,
            "keep": {"hessian": self.keep_hessian, "eigvecs": self.keep_eigvecs},
            "chunk_size": self.chunk_size,
            "reducers": dict(self.reducers),
            "resources": dict(self.resources),
        }

    def identity(self) -> dict:
        """The fields that decide the stored numbers (not store, resources, reducers)."""
        d = self.to_dict()
        for k in ("store", "resources", "reducers"):
            d.pop(k)
        if self.codes_file:  # the codes themselves, wherever the file has moved
            d["codes"] = {"n": self.n_codes, "sha256": self.codes_sha256}
        return d

    def with_store(self, store: str | None) -> "SweepSpec":
        """A copy whose store URL is ``store`` (unchanged when None)."""
        if store is None:
            return self
        return replace(self, store=str(store))


def _generator_dicts(generators: tuple[GeneratorSpec, ...]) -> list[dict]:
    """The generator entries in their YAML form, each series once (its first checkpoint stands for it)."""
    out, folded = [], set()
    for g in generators:
        if g.series is not None:
            if g.series_of in folded:
                continue
            folded.add(g.series_of)
        out.append(_generator_dict(g))
    return out


def _generator_dict(g: GeneratorSpec) -> dict:
    """One generator entry in its YAML form: a series' checkpoints fold back into the series."""
    if g.series is None:
        label, options, extra = g.label, dict(g.options), {}
    else:
        options = {k: v for k, v in g.options.items() if k != g.series.get("option", DEFAULT_OPTION)}
        label, extra = g.series_of, {"series": dict(g.series)}
    # a default label is implied, so runs made before labels existed keep their identity
    return {"name": g.name, "spaces": list(g.spaces), "options": options, **extra,
            **({"label": label} if label != default_label(g.name, options) else {})}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _section(raw: dict, key: str, problems: list[str]) -> dict:
    """A mapping section with defaults filled and unknown keys reported."""
    value = raw.get(key)
    defaults = DEFAULTS[key]
    if value is None:
        return dict(defaults)
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a mapping with keys {sorted(defaults)}, got {clip(value)}")
        return dict(defaults)
    for k in value:
        if k not in defaults:
            problems.append(f"{key}.{clip(k, bare=True)}: unknown key; expected one of {sorted(defaults)}")
    return {**defaults, **{k: v for k, v in value.items() if k in defaults}}


def _parse_generators(value: Any, problems: list[str]) -> list[GeneratorSpec]:
    if not isinstance(value, list) or not value:
        problems.append(f"generators: expected a non-empty list of {{name, spaces, options}}, got {clip(value)}")
        return []
    known = _known("list_generators")
    out: list[GeneratorSpec] = []
    for i, g in enumerate(value):
        where = f"generators[{i}]"
        if isinstance(g, str):
            g = {"name": g}
        if not isinstance(g, dict):
            problems.append(f"{where}: expected a mapping with a name, got {clip(g)}")
            continue
        for k in g:
            if k not in ("name", "label", "spaces", "options", "series"):
                problems.append(f"{where}.{clip(k, bare=True)}: unknown key; expected name, label, spaces, "
                                "options or series")
        name = g.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            problems.append(f"{where}.name: expected a generator name, got {clip(name)}")
            continue
        if known is not None and name not in known:
            problems.append(f"{where}.name: unknown generator {clip(name)}; known: {sorted(known)}")
        valid = tuple(known[name][0]) if known and name in known else None
        spaces = g.get("spaces") or [valid[0] if valid else DEFAULT_SPACE]
        if isinstance(spaces, str):
            spaces = [spaces]
        # A generator's own space names are valid even where they are not plain names ("w+").
        if not isinstance(spaces, list) or not all(isinstance(s, str) and (_NAME_RE.match(s) or s in (valid or ()))
                                                   for s in spaces):
            problems.append(f"{where}.spaces: expected a list of space names, got {clip(spaces)}")
            spaces = [DEFAULT_SPACE]
        elif valid and any(s not in valid for s in spaces):
            problems.append(f"{where}.spaces: expected spaces among {list(valid)}, got {clip(spaces)}")
        options = g.get("options") or {}
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            problems.append(f"{where}.options: expected a mapping of loader options, got {clip(options)}")
            options = {}
        label = g.get("label") or default_label(name, options)
        if not isinstance(label, str) or not _NAME_RE.match(label) or label == "reduce":
            problems.append(f"{where}.label: expected a group name (not 'reduce'), got {clip(label)}")
            label = name
        spaces = tuple(dict.fromkeys(spaces))
        if "series" not in g:
            entries = [GeneratorSpec(name, spaces, dict(options), label)]
        else:
            accepted = _weight_options(name) if known is not None and name in known else None
            series, found = expand_series(where, g["series"], options, accepted, problems)
            entries = [GeneratorSpec(name, spaces, {**options, series.get("option", DEFAULT_OPTION): path},
                                     series_label(label, step), series, step, label) for step, path in found]
        taken = {o.label for o in out} | {o.series_of for o in out if o.series_of}
        for e in entries:
            if e.label in taken or (e.series_of and e.series_of in taken):
                problems.append(f"{where}.label: {clip(e.label)} is used by another generator; "
                                "give each a distinct label")
                break
        out += entries
    return out


def _weight_options(name: str) -> tuple[str, ...] | None:
    try:
        from geometry_core.generators import weight_options

        return weight_options(name)
    except (ImportError, GeometryError):
        return None


def _parse_targets(value: Any, problems: list[str]) -> list[str]:
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        problems.append(f"targets: expected a non-empty list of distance names or 'layer:<name>', got {clip(value)}")
        return []
    known = _known("list_distances")
    out = []
    for i, t in enumerate(value):
        if isinstance(t, dict) and list(t) == ["layers"] and t["layers"] == "all":
            t = ALL_LAYERS  # YAML reads `- layers: all` as a mapping
        if not isinstance(t, str) or not _TARGET_RE.match(t.replace(" ", "")):
            problems.append(f"targets[{i}]: expected a distance name, 'layer:<name>' or 'layers: all', got {clip(t)}")
            continue
        t = t.replace(" ", "")
        if t.startswith("layers:") and t != ALL_LAYERS:
            problems.append(f"targets[{i}]: expected 'layers: all', got {clip(t)}")
            continue
        if t.startswith("layer:") and len(t) == len("layer:"):
            problems.append(f"targets[{i}]: expected 'layer:<layer name>', got {clip(t)}")
            continue
        if known is not None and not t.startswith("layer") and t not in known:
            problems.append(f"targets[{i}]: unknown distance {clip(t)}; known: {sorted(known)}")
        out.append(t)
    return list(dict.fromkeys(out))


def _known(func: str) -> dict | None:
    """A geometry_core registry listing (name -> details); None when it is unavailable."""
    try:
        import geometry_core

        listing = getattr(geometry_core, func)()
        return dict(listing) if isinstance(listing, dict) else dict.fromkeys(listing)
    except (ImportError, AttributeError, NotImplementedError):
        return None


def _check_int(problems: list[str], where: str, v: Any, low: int, high: int, what: str) -> None:
    if not _is_int(v) or not low <= v <= high:
        problems.append(f"{where}: expected {what} from {low} to {high}, got {clip(v)}")


def _check_scalars(raw: dict, codes: dict, keep: dict, red: dict, res: dict, problems: list[str]) -> None:
    _check_int(problems, "codes.n", codes["n"], 1, LIMITS["codes"], "a number of codes")
    _check_int(problems, "codes.seed", codes["seed"], 0, LIMITS["seed"], "an integer seed")
    method = raw.get("method", DEFAULTS["method"])
    if method not in METHODS:
        problems.append(f"method: expected one of {list(METHODS)}, got {clip(method)}")
    topk = raw.get("topk")
    if topk is not None:
        _check_int(problems, "topk", topk, 1, LIMITS["codes"], "a number of eigenpairs (or null)")
    if isinstance(method, str) and method.startswith("lanczos") and topk is None:
        problems.append(f"topk: method {clip(method)} needs topk (the number of eigenpairs)")
    _check_int(problems, "chunk_size", raw.get("chunk_size", DEFAULTS["chunk_size"]), 1, LIMITS["chunk_size"],
               "a number of codes per chunk")
    for sec, d in (("keep", keep), ("reducers", red)):
        for k, v in d.items():
            if not isinstance(v, bool):
                problems.append(f"{sec}.{k}: expected true or false, got {clip(v)}")
    keeps_bool = all(isinstance(v, bool) for v in keep.values())
    needs = [name for name, r in REDUCER_TABLE.items() if r.needs_eigvecs]
    if keeps_bool and any(red.get(name) is True for name in needs) and not (keep["eigvecs"] or keep["hessian"]):
        problems.append(f"keep: reducers {'/'.join(needs)} need keep.eigvecs or keep.hessian to be true")
    if res["workers"] is not None:
        _check_int(problems, "resources.workers", res["workers"], 1, LIMITS["workers"],
                   "a number of workers (or null: auto)")
    if res["reduce_device"] not in REDUCE_DEVICES:
        problems.append(f"resources.reduce_device: expected one of {list(REDUCE_DEVICES)}, "
                        f"got {clip(res['reduce_device'])}")
    top = LIMITS["resources_per_worker"]
    for k in ("gpus_per_worker", "cpus_per_worker"):
        v = res[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= top:
            problems.append(f"resources.{k}: expected a finite number from 0 to {top}, got {clip(v)}")
    if res["cpus_per_worker"] == 0 and res["gpus_per_worker"] == 0:
        problems.append("resources: a worker needs cpus_per_worker > 0 or gpus_per_worker > 0")


def parse_spec(raw: Any) -> SweepSpec:
    """Validate a spec mapping (as read from YAML); raise :class:`SpecError` listing every problem."""
    if not isinstance(raw, dict):
        raise SpecError([f"spec: expected a mapping at the top level, got {type(raw).__name__}"])
    problems: list[str] = [f"{clip(k, bare=True)}: unknown key; expected one of {list(_TOP_KEYS)}"
                           for k in raw if k not in _TOP_KEYS]
    name = raw.get("name")
    if not is_run_name(name):
        problems.append(f"name: expected a run name of letters, digits, '.', '_' or '-', got {clip(name)}")
    store = raw.get("store", DEFAULTS["store"])
    if not isinstance(store, str) or not store.strip():
        problems.append(f"store: expected a directory or s3://bucket/prefix, got {clip(store)}")
    gens = _parse_generators(raw.get("generators"), problems)
    targets = _parse_targets(raw.get("targets"), problems)
    codes, source = _parse_codes(raw, problems)
    keep = _section(raw, "keep", problems)
    red = _section(raw, "reducers", problems)
    res = _section(raw, "resources", problems)
    _check_scalars(raw, codes, keep, red, res, problems)
    if problems:
        raise SpecError(problems)
    return SweepSpec(
        name=cast(str, name), generators=tuple(gens), targets=tuple(targets), n_codes=codes["n"],
        seed=codes["seed"], store=store, method=raw.get("method", DEFAULTS["method"]),
        topk=raw.get("topk"), keep_hessian=keep["hessian"], keep_eigvecs=keep["eigvecs"],
        chunk_size=raw.get("chunk_size", DEFAULTS["chunk_size"]), reducers=red, resources=res,
        **({"codes_file": source.path, "codes_dim": source.dim, "codes_sha256": source.sha256} if source else {}),
    )


def _parse_codes(raw: dict, problems: list[str]) -> tuple[dict, Any]:
    """The codes section: ``{n, seed}`` (defaults filled), or ``{file}`` read and validated now.

    Returns the ``{n, seed}`` to check and the :class:`cluster.codes.CodesFile` (None for seed codes).
    """
    value = raw.get("codes")
    if not (isinstance(value, dict) and "file" in value):
        return _section(raw, "codes", problems), None
    from .codes import read_codes_file

    others = sorted(str(k) for k in value if k != "file")
    if others:
        problems.append(f"codes: give either file or n and seed, not both (got file and {clip(others)})")
    source, found = read_codes_file(value["file"])
    problems += found
    if source is not None and source.n > LIMITS["codes"]:
        problems.append(f"codes.file: {source.n} codes, over the limit of {LIMITS['codes']}")
    return {"n": source.n if source else 1, "seed": 0}, source


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a YAML spec file (bounded, strict YAML: :mod:`cluster.spec_yaml`)."""
    return parse_spec(read_spec_yaml(path, SpecError))


def is_run_name(name: Any) -> bool:
    """Whether ``name`` may name a run: a plain name, never a path, a reserved group or ``reduce``."""
    return isinstance(name, str) and bool(_NAME_RE.match(name)) and name != "reduce"


def check_run_name(name: Any, what: str = "RUN") -> str:
    """``name`` if it may name a run (the spec's rule), else :class:`UsageError`, before any store access."""
    if not is_run_name(name):
        raise UsageError(f"{what}: expected a run name of letters, digits, '.', '_' or '-' "
                         f"(not starting with '.', '_' or '-'), got {clip(name)}")
    return name
