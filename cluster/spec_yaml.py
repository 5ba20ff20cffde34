"""Reading a spec file: bounded, strict YAML (ARCHITECTURE.md, "Errors").

Example::

    raw = read_spec_yaml("jobs/examples/quickstart.yaml")   # a plain dict, or SpecError

A spec is small, shallow and written by hand, so anything else is refused
before it is built: a file over :data:`MAX_SPEC_BYTES`, bytes that are not
UTF-8 text, nesting deeper than :data:`MAX_DEPTH` (a 20,000-deep list would
exhaust Python's stack), more than :data:`MAX_ALIASES` aliases or more than
:data:`MAX_NODES` values once they are expanded (a few hundred bytes of nested
aliases expand to gigabytes: the "billion laughs"), and a key
given twice in one mapping (YAML would silently keep the last).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.events import AliasEvent

from geometry_core.errors import clip

__all__ = ["MAX_ALIASES", "MAX_DEPTH", "MAX_NODES", "MAX_SPEC_BYTES", "read_spec_yaml"]

MAX_SPEC_BYTES = 1 << 20  # 1 MiB; the shipped specs are under 2 kB
MAX_DEPTH = 32            # a spec nests 4 levels; generator options a few more
MAX_ALIASES = 64          # enough to share a block of options between generators
MAX_NODES = 100_000       # values after aliases are expanded (a spec has a few hundred)


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

    def compose_document(self):
        node = super().compose_document()
        _check_expanded_size(node)
        return node

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


def _check_expanded_size(root) -> None:
    """Count the values of the composed graph as if every alias were copied, before anything is built."""
    size: dict[int, int] = {}
    open_nodes: set[int] = set()  # expanded, not yet summed: the ancestors of the node in hand
    stack = [(root, False)]
    while stack:  # iterative post-order: aliases can chain far deeper than the nesting limit
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        if not children_done and id(node) in open_nodes:
            raise _SpecProblem("a YAML alias refers to a value that contains it (a recursive alias)")
        children = [v for pair in node.value for v in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            size[id(node)] = 1 + sum(size.get(id(c), MAX_NODES + 1) for c in children)
            if size[id(node)] > MAX_NODES:
                raise _SpecProblem(f"more than {MAX_NODES} values once YAML aliases are expanded")
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def read_spec_yaml(path: str | Path, error: type[Exception]):
    """The YAML document of ``path`` (bounded and strict); problems raise ``error([line])``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise error([f"spec: cannot read {clip(str(path), bare=True)}: {exc.strerror or exc}"]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise error([f"spec: {clip(str(path), bare=True)} is larger than {MAX_SPEC_BYTES} bytes; "
                     "a spec is a short YAML file"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error([f"spec: {clip(str(path), bare=True)} is not UTF-8 text (byte {exc.start}); "
                     "expected a YAML sweep spec"]) from None
    if "\x00" in text:
        raise error([f"spec: {clip(str(path), bare=True)} is a binary file (NUL byte); expected a YAML sweep spec"])
    try:
        loader = _StrictLoader(text)  # a SafeLoader subclass, used directly: no yaml.load call anywhere
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _SpecProblem as exc:
        raise error([f"spec: {clip(str(path), bare=True)}: {exc}"]) from None
    except ValueError as exc:  # an integer of more digits than Python converts (4,300), and the like
        why = clip(str(exc), 120, bare=True)
        raise error([f"spec: {clip(str(path), bare=True)}: a value cannot be read ({why})"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise error([f"spec: {clip(str(path), bare=True)} is not valid YAML{where}"]) from None
