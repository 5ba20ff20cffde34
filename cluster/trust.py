"""What a spec read back from a store may make this process do.

A store can be written by others (a shared bucket), so a spec found in a run's
attributes never decides to import code: a generator option that names an
import path (``arch``) is honoured only when the person running the command
says so on that command (``--allow-import``), whatever the stored spec's own
``allow_import`` says. Spec files and the command line are trusted as before.
See ARCHITECTURE.md, "Trust".

Example::

    raw = gate_stored_spec(attrs["spec"], run="nightly", allow_import=args.allow_import)
"""

from __future__ import annotations

import copy
from typing import cast

from .storage import StoreError

__all__ = ["IMPORT_OPTIONS", "ImportNotAllowedError", "gate_stored_spec", "import_paths"]

# Loader options whose value is imported and run (geometry_core.generators.module.import_arch).
IMPORT_OPTIONS = ("arch",)
_SHOWN = 200  # characters of a stored string echoed in a message


class ImportNotAllowedError(StoreError):
    """A stored spec names code to import and the user did not allow it on the command line."""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def import_paths(raw_spec: object) -> list[tuple[str, object]]:
    """``(generator name, import path)`` for every generator option of ``raw_spec`` that imports code."""
    gens = raw_spec.get("generators") if isinstance(raw_spec, dict) else None
    found = []
    for g in gens if isinstance(gens, list) else []:
        options = g.get("options") if isinstance(g, dict) else None
        if isinstance(options, dict):
            found += [(str(g.get("name")), options[k]) for k in IMPORT_OPTIONS if k in options]
    return found


def gate_stored_spec(raw_spec: object, *, run: str, allow_import: bool) -> object:
    """A copy of a stored spec whose ``allow_import`` flags are the caller's, never the store's.

    Raises :class:`ImportNotAllowedError` when the spec names an import path and
    ``allow_import`` is not True. Without import paths the spec is returned as
    stored (its flags then import nothing).
    """
    paths = import_paths(raw_spec)
    if not paths:
        return raw_spec
    if allow_import is not True:
        name, path = paths[0]
        raise ImportNotAllowedError(
            f"run {run!r}: its stored spec names code to import (generator {_short(name)}, arch={_short(path)}); "
            "a store never decides to run code: pass --allow-import to trust it")
    gated = cast(dict, copy.deepcopy(raw_spec))  # import_paths found some: a dict of generators
    for g in gated["generators"]:
        options = g.get("options") if isinstance(g, dict) else None
        if isinstance(options, dict) and any(k in options for k in IMPORT_OPTIONS):
            options["allow_import"] = True
    return gated
