"""Reading a spec file: bounded, strict YAML (ARCHITECTURE.md, "Errors").

Example::

    raw = read_spec_yaml("jobs/examples/quickstart.yaml")   # a plain dict, or SpecError

A spec is small, shallow and written by hand, so anything else is refused
before it is built: a file over :data:`MAX_SPEC_BYTES`, bytes that are not
UTF-8 text, nesting deeper than :data:`MAX_DEPTH` (a 20,000-deep list would
exhaust Python's stack), more than :data:`MAX_ALIASES` aliases (a few hundred
bytes of nested aliases expand to gigabytes: the "billion laughs"), and a key
given twice in one mapping (YAML would silently keep the last).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.events import AliasEvent

from geometry_core.errors import clip

__all__ = ["MAX_ALIASES", "MAX_DEPTH", "MAX_SPEC_BYTES", "read_spec_yaml"]

MAX_SPEC_BYTES = 1 << 20  # 1 MiB; the shipped specs are under 2 kB
MAX_DEPTH = 32            # a spec nests 4 levels; generator options a few more
MAX_ALIASES = 64          # enough to share a block of options between generators


class _SpecProblem(Exception):
    """Raised inside the loader; becomes one SpecError line in :func:`read_spec_yaml`."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with depth and alias limits at composition and no duplicate keys."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _SpecProblem(f"more than {MAX_ALIASES} YAML aliases (*name); write the values out")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _SpecProblem(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class names it
                break
            if duplicate:
                raise _SpecProblem(f"key {clip(key)} appears twice in one mapping "
                                   f"(line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_spec_yaml(path: str | Path, error: type[Exception]):
    """The YAML document of ``path`` (bounded and strict); problems raise ``error([line])``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise error([f"spec: cannot read {clip(str(path))}: {exc.strerror or exc}"]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise error([f"spec: {clip(str(path))} is larger than {MAX_SPEC_BYTES} bytes; a spec is a short YAML file"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error([f"spec: {clip(str(path))} is not UTF-8 text (byte {exc.start}); "
                     "expected a YAML sweep spec"]) from None
    if "\x00" in text:
        raise error([f"spec: {clip(str(path))} is a binary file (NUL byte); expected a YAML sweep spec"])
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _SpecProblem as exc:
        raise error([f"spec: {clip(str(path))}: {exc}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise error([f"spec: {clip(str(path))} is not valid YAML{where}"]) from None
