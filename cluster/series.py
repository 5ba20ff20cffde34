"""Checkpoint series: one generator entry whose weights are every checkpoint of a training run.

Example (a spec's generator entry)::

    - name: dcgan-faces
      label: faces
      series:
        weights: runs/faces/ckpt-*.tar   # a glob, or a directory (every file in it); or s3://bucket/glob
        step: 'ckpt-(\\d+)'              # optional: the step is this regex's first group in the file name
        option: weights                  # optional: the loader option each file is given

The entry expands, when the spec is read, into one generator per file, labelled
``<label>-step<step>`` and ordered by step; they share the spec's codes, so points
compare across steps. The step is by default the last number in the file name.
The spec's identity keeps the pattern, not the files: rerunning it after new
checkpoints appeared grows the run by their groups (ARCHITECTURE.md, "Series").
Each file's sha256 is part of the run's identity as any weights file's is.
A series in S3 is listed here and each checkpoint named by its URL pinned to
the object's ETag; whoever loads one downloads that object (:mod:`cluster.s3_checkpoints`).
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import cast

from geometry_core.errors import WeightsError, clip

from .s3_checkpoints import is_s3, list_checkpoints, unpinned

__all__ = ["DEFAULT_OPTION", "DEFAULT_STEP", "MAX_CHECKPOINTS", "SERIES_KEYS", "expand_series", "series_label"]

DEFAULT_STEP = r"(\d+)(?!.*\d)"  # the last run of digits in the file name
DEFAULT_OPTION = "weights"
SERIES_KEYS = ("weights", "step", "option")
MAX_CHECKPOINTS = 10_000


def series_label(label: str, step: int) -> str:
    """The group label of one checkpoint of a series."""
    return f"{label}-step{step}"


def expand_series(where: str, raw, options: dict, accepted: tuple[str, ...] | None,
                  problems: list[str]) -> tuple[dict, list[tuple[int, str]]]:
    """The validated series mapping (its YAML form, paths absolute) and its ``(step, path)`` in step order.

    ``accepted``: the generator's weights options (None when unknown). Problems are
    appended as one line each, naming the field; nothing is read but file names.
    """
    if not isinstance(raw, dict) or "weights" not in raw:
        problems.append(f"{where}.series: expected a mapping with weights (a glob or directory), "
                        f"and optionally step and option, got {clip(raw)}")
        return {}, []
    for k in raw:
        if k not in SERIES_KEYS:
            problems.append(f"{where}.series.{clip(k, bare=True)}: unknown key; expected one of {list(SERIES_KEYS)}")
    pattern, step_re, option = raw.get("weights"), raw.get("step", DEFAULT_STEP), raw.get("option", DEFAULT_OPTION)
    n_before = len(problems)
    if not isinstance(pattern, str) or not pattern.strip():
        problems.append(f"{where}.series.weights: expected a glob or a directory of checkpoints, got {clip(pattern)}")
    elif "://" in pattern and not is_s3(pattern):
        problems.append(f"{where}.series.weights: expected a local glob or directory or s3://bucket/glob, "
                        f"got {clip(pattern)}")
    regex = None
    try:
        regex = re.compile(step_re) if isinstance(step_re, str) else None
    except re.error as err:
        problems.append(f"{where}.series.step: not a regular expression ({err}): {clip(step_re)}")
    else:
        if regex is None or regex.groups < 1:
            problems.append(f"{where}.series.step: expected a regular expression with a group for the step, "
                            f"got {clip(step_re)}")
            regex = None
    if not isinstance(option, str) or (accepted is not None and option not in accepted):
        problems.append(f"{where}.series.option: expected one of the generator's weights options "
                        f"{list(accepted or ())}, got {clip(option)}")
    elif option in options:
        problems.append(f"{where}.options.{option}: give each checkpoint through series, not options")
    if len(problems) > n_before:
        return {}, []
    # Past the problems: the pattern is a string and the step regex compiled.
    pattern, regex = cast(str, pattern), cast("re.Pattern[str]", regex)
    if is_s3(pattern):
        try:
            files = list_checkpoints(pattern)
        except WeightsError as err:
            problems.append(f"{where}.series.weights: {err}")
            return {}, []
    else:
        pattern = os.path.abspath(os.path.expanduser(pattern))  # workers and later runs read the same files
        files = [(path, Path(path).name) for path in _files(pattern)]
    found: dict[int, str] = {}
    stepless = []
    for path, name in files:
        m = regex.search(name)
        if m is None or not m.group(1) or not m.group(1).isdigit() or len(m.group(1)) > 18:
            stepless.append(name)
            continue
        step = int(m.group(1))
        if step in found:
            problems.append(f"{where}.series: {clip(unpinned(found[step]))} and {clip(unpinned(path))} "
                            f"both name step {step}")
        found[step] = path
    if stepless:
        more = f" and {len(stepless) - 1} more" if len(stepless) > 1 else ""
        problems.append(f"{where}.series.step: no step in the file name {clip(stepless[0])}{more} "
                        f"(the pattern {clip(regex.pattern)} must find a number)")
    if not files:
        problems.append(f"{where}.series.weights: no checkpoint file matches {clip(pattern)}")
    elif len(files) > MAX_CHECKPOINTS:
        problems.append(f"{where}.series.weights: {len(files)} files, over the limit of {MAX_CHECKPOINTS}")
    clean = {"weights": pattern, **({"step": step_re} if step_re != DEFAULT_STEP else {}),
             **({"option": option} if option != DEFAULT_OPTION else {})}
    return clean, sorted(found.items())


def _files(pattern: str) -> list[str]:
    """Regular files of a directory, or those a glob matches, sorted by name."""
    if os.path.isdir(pattern):
        return sorted(str(p) for p in Path(pattern).iterdir() if p.is_file())
    return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
