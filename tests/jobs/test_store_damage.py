"""Issue 13, findings 3, 6, 7: the store-damage suite — every command against each kind of damage.

Each case builds the small finished run of :mod:`tests.support.runs` (plus a second,
intact run ``w``), damages it one way, runs one command through ``gangeo``'s own
entry point and checks the exit code (ARCHITECTURE.md, "Errors"), that an error is
exactly one stderr line and that no traceback escapes.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from cluster.store import RunStore
from jobs.cli import EXIT_CODES, main
from tests.support.runs import build_run

KEY = "module/z/mse"
STORE = EXIT_CODES["store"]
COMMANDS = ("ls", "status", "verify", "resume", "query", "reduce", "report")


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _flip(s: Path) -> None:
    path = s / "v" / KEY / "eigvecs" / "c" / "1" / "0" / "0"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _stale_lock(s: Path) -> None:
    """What a SIGKILLed driver leaves: status "running" and a lock whose process is gone."""
    RunStore(str(s)).update_attrs("v", status="running")
    (s / "_locks" / "v").mkdir(parents=True)
    (s / "_locks" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    now = time.time()
    lock = {"owner": "dead", "host": socket.gethostname(), "pid": 2 ** 22 + 7, "heartbeat": now, "expires": now + 600}
    (s / "_locks" / "v" / "zarr.json").write_text(json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": {"lock": lock}}))  # the lock's record, as written


def _interrupted_reduce(s: Path) -> None:
    """global written, homogeneity never: reduce/ without its completion record, run status "reducing"."""
    import zarr

    rs = RunStore(str(s))
    rs.update_attrs("v", status="reducing", spec={**rs.attrs("v")["spec"], "reducers": {
        "global": True, "homogeneity": True, "anisotropy": True}})
    red = zarr.open_group(str(s / "v" / KEY), mode="a").require_group("reduce")
    red.attrs.update({"state": "reducing"})
    red.create_array("homogeneity_log", shape=(8, 8), chunks=(8, 8), dtype="f8", fill_value=float("nan"))


DAMAGE = {
    "chunk-bytes-flipped": _flip,
    "chunk-file-missing": lambda s: (s / "v" / KEY / "eigvecs" / "c" / "2" / "0" / "0").unlink(),
    "root-metadata-truncated": lambda s: _truncate(s / "zarr.json"),
    "run-metadata-truncated": lambda s: _truncate(s / "v" / "zarr.json"),
    "group-metadata-truncated": lambda s: _truncate(s / "v" / KEY / "zarr.json"),
    "array-metadata-truncated": lambda s: _truncate(s / "v" / KEY / "eigvecs" / "zarr.json"),
    "done-entry-missing": lambda s: (s / "v" / KEY / "done" / "c" / "1").unlink(),
    "stale-lock": _stale_lock,
    "interrupted-reduce": _interrupted_reduce,
}
OK, PARTIAL = 0, 1
# damage -> exit code per command, in the order of COMMANDS
EXPECT = {
    "chunk-bytes-flipped":      (OK, OK, PARTIAL, OK, STORE, STORE, STORE),
    "chunk-file-missing":       (OK, OK, PARTIAL, OK, STORE, STORE, STORE),
    "root-metadata-truncated":  (STORE,) * 7,
    "run-metadata-truncated":   (OK,) + (STORE,) * 6,
    "group-metadata-truncated": (OK,) + (STORE,) * 6,
    "array-metadata-truncated": (OK, OK) + (STORE,) * 5,
    "done-entry-missing":       (OK, OK, PARTIAL, OK, OK, OK, OK),
    "stale-lock":               (OK,) * 7,
    "interrupted-reduce":       (OK, OK, PARTIAL, OK, STORE, OK, STORE),
}
# what a damaged file is named by, in the one line
NAMED = {"root-metadata-truncated": "zarr.json", "run-metadata-truncated": "v/zarr.json",
         "group-metadata-truncated": f"{KEY}/zarr.json", "array-metadata-truncated": "eigvecs/zarr.json",
         "chunk-bytes-flipped": "chunk 1", "chunk-file-missing": "chunk 2", "interrupted-reduce": "unfinished"}


def _argv(command: str, damage: str, store: Path, tmp_path: Path) -> list[str]:
    run = [] if command == "ls" else ["v"]
    extra = {"resume": ["--quiet", "--allow-import"], "reduce": ["--no-ray", "--quiet"],
             "report": ["--no-traversals", "--quiet", "--out", str(tmp_path / "report")],
             "query": ["--array", "reduce/homogeneity_log" if damage == "interrupted-reduce" else "eigvecs"]}
    return [command, *run, "--store", str(store), *extra.get(command, [])]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_ends_in_one_line(damage, command, tmp_path, capsys, request):
    if command == "resume":
        request.getfixturevalue("ray_local")
    store = tmp_path / "s"
    build_run(store)
    build_run(store, "w")
    DAMAGE[damage](store)
    rc = main(_argv(command, damage, store, tmp_path))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    assert rc == EXPECT[damage][COMMANDS.index(command)], err
    if rc == STORE:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"gangeo {command}: "), err
        assert NAMED[damage] in lines[0], lines[0]
    if command == "ls" and rc == OK:  # one damaged run never hides the intact one
        runs = {r["run"]: r["status"] for r in json.loads(out)["runs"]}
        assert runs["w"] == "created"
        assert runs["v"] == ("damaged" if damage == "run-metadata-truncated" else runs["v"])
    if command == "status" and damage in ("stale-lock", "interrupted-reduce"):
        assert json.loads(out)["status"] == "interrupted"


@pytest.mark.parametrize("command", ("verify", "query", "reduce"))
def test_damage_is_not_hidden_by_consolidated_metadata(command, tmp_path, capsys):
    """A finished run carries consolidated metadata for plain xarray; gangeo still reads each array's own."""
    import zarr

    from cluster.xr import consolidate_run

    store = tmp_path / "s"
    build_run(store)
    assert consolidate_run(zarr.open_group(str(store), mode="r+"), "v") == 1
    _truncate(store / "v" / KEY / "eigvecs" / "zarr.json")
    rc = main(_argv(command, "array-metadata-truncated", store, tmp_path))
    err = capsys.readouterr().err
    assert rc == STORE, err
    assert "eigvecs/zarr.json" in err.strip().splitlines()[-1], err
