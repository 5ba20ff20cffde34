"""What a writer of a shared store can do to its schedules: the red team's payload (issue 21)."""

from __future__ import annotations

from pathlib import Path

import zarr

from jobs.schedule import STATE_GROUP, ScheduleBook

__all__ = ["TINY", "payload", "tamper"]

TINY = {"name": "tiny", "generators": [{"name": "dcgan-faces"}], "targets": ["mse"], "codes": {"n": 2, "seed": 0},
        "chunk_size": 2, "resources": {"workers": 1, "cpus_per_worker": 1}}


def payload(marker: Path) -> dict:
    """The red team's spec: a `module` generator whose arch is subprocess.run, allowed by the store itself."""
    return {**TINY, "generators": [{"name": "module", "options": {
        "arch": "subprocess:run", "allow_import": True, "latent_dim": 4,
        "arch_kwargs": {"args": ["touch", str(marker)]}}}]}


def tamper(store: Path, name: str, **fields) -> ScheduleBook:
    """Edit one schedule's stored entry, as anyone who can write the store can; the book a later fire opens."""
    group = zarr.open_group(str(store), mode="a", zarr_format=3)[STATE_GROUP]
    entries = dict(group.attrs["schedules"])
    entries[name] = {**entries[name], **fields}
    group.attrs["schedules"] = entries
    return ScheduleBook(zarr.open_group(str(store), mode="a", zarr_format=3))


