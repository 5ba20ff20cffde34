"""Security properties, checked on the source tree and on what a real run writes."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path

import pytest
import yaml

from cluster.spec import SpecError, load_spec
from geometry_core.errors import GeometryError
from jobs.cli import EXIT_CODES, main
from tests.support.runs import tanh_spec

REPO = Path(__file__).resolve().parent.parent
# The product and its benchmarks; tests/ is left out because one test unpickles a payload on purpose.
SOURCES = [p for d in ("geometry_core", "cluster", "jobs", "bench") for p in (REPO / d).rglob("*.py")]


def _calls(name: str, attr: str):
    """Every call ``name.attr(...)`` in the source tree, as (file, line, keywords)."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attr
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == name):
                yield path.relative_to(REPO), node.lineno, {k.arg: k.value for k in node.keywords}


def _const(node) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def test_every_torch_load_is_weights_only():
    calls = list(_calls("torch", "load"))
    assert calls, "expected torch.load calls to check"
    bad = [(str(f), line) for f, line, kw in calls if _const(kw.get("weights_only")) is not True]
    assert bad == []


def test_yaml_is_loaded_safely(tmp_path):
    unsafe = [(str(f), line) for attr in ("load", "unsafe_load", "full_load", "load_all")
              for f, line, _ in _calls("yaml", attr)]
    assert unsafe == []
    marker = tmp_path / "pwned"
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(spec)
    assert not marker.exists()


def test_user_named_import_only_with_opt_in():
    import geometry_core as gc

    opts = {"arch": "torch.nn:Tanh", "latent_dim": 12, "input_shape": [3, 2, 2]}
    for flag in ({}, {"allow_import": False}, {"allow_import": "yes"}, {"allow_import": 1}):
        with pytest.raises(GeometryError, match="allow_import=True"):
            gc.load_generator("module", **opts, **flag)
    assert gc.load_generator("module", **opts, allow_import=True).latent_dim == 12


def test_no_source_binds_every_interface():
    # Where Ray's processes really listen is measured in test_trust.py.
    for path in SOURCES:
        assert "0.0.0.0" not in path.read_text(), f"{path}: binds to every interface"


def test_credentials_never_written_or_printed(ray_local, s3_server, tmp_path, monkeypatch, capsys):
    import ray

    secret = f"gangeoSecret{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # moto accepts any secret unless told otherwise
    url = s3_server.new_bucket("secret") + "/r"
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tanh_spec("sec", n=4, resources={"workers": 1})))
    assert main(["run", str(spec), "--store", url, "--quiet"]) == 0
    assert main(["status", "sec", "--store", url]) == 0
    assert main(["verify", "sec", "--store", url]) == 0
    assert main(["status", "sec", "--store", url + "-absent"]) == EXIT_CODES["store"]  # an error message too
    out, err = capsys.readouterr()
    bucket = url.removeprefix("s3://").partition("/")[0]
    client = s3_server.client()
    keys = s3_server.keys(f"s3://{bucket}")
    assert any(k.endswith("sec/zarr.json") for k in keys)
    leaks = [k for k in keys if secret.encode() in client.get_object(Bucket=bucket, Key=k)["Body"].read()]
    assert leaks == [] and secret not in out and secret not in err
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    logs = [p for p in (session / "logs").rglob("*") if p.is_file()]
    assert logs, "expected Ray session logs to search"
    leaked_logs = [str(p.name) for p in logs if secret.encode() in p.read_bytes()]
    assert leaked_logs == []


def _rezip(src: Path, dst: Path, *, compress: int, extra: tuple[str, bytes] | None = None) -> None:
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=compress) as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))
        if extra:
            zout.writestr(extra[0], extra[1])


def test_a_zip_bomb_checkpoint_is_refused_before_it_expands(tmp_path):
    import zipfile

    import torch

    from geometry_core.generators.checkpoint import safe_load

    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    bomb = tmp_path / "bomb.pt"  # 64 MiB of zeros deflate to ~64 KiB: the file is small, the member is not
    _rezip(good, bomb, compress=zipfile.ZIP_DEFLATED, extra=("good/data/9", bytes(64 << 20)))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(GeometryError, match=r"holds a compressed member .* torch checkpoints are stored "
                                            r"uncompressed, refused"):
        safe_load(bomb, what="w")
    assert torch.equal(safe_load(good, what="w")["w"], torch.ones(3))


def test_a_tensor_larger_than_its_storage_is_refused(tmp_path):
    import torch

    from geometry_core.generators.checkpoint import safe_load

    path = tmp_path / "stride0.pt"
    torch.save({"w": torch.zeros(1).expand(1 << 30)}, path)  # a few hundred bytes on disk, 4 GiB as a copy
    assert path.stat().st_size < 1 << 16
    with pytest.raises(GeometryError, match=r"holds a tensor of shape \(1073741824,\) \(4294967296 bytes\) over a "
                                            r"storage of 4 bytes \(strides \(0,\)\); refused"):
        safe_load(path, what="w")
