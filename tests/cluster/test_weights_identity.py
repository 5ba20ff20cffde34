"""Issue 13, finding 5: a weights file replaced at the same path is never mixed into a run.

The run identity records the sha256 of every weights file its generators load;
resume with different contents is refused in one line naming the file; a run made
before hashes existed is accepted with a warning and its hashes recorded.
"""

from __future__ import annotations

import pytest
import torch

from cluster.driver import run_sweep
from cluster.layout import GroupLayout
from cluster.spec import parse_spec
from cluster.store import RunExistsError, RunStore
from cluster.weights_identity import weights_digests
from geometry_core.weights_cache import sha256_file as file_sha256
from tests.support.runs import C, D, N, tanh_spec


def _spec(tmp_path, name="w"):
    path = tmp_path / "weights.pt"
    if not path.exists():
        torch.save({}, path)  # torch.nn.Tanh has no parameters: an empty state_dict loads strictly
    raw = tanh_spec(name)
    raw["generators"][0]["options"]["weights"] = str(path)
    return parse_spec(raw), path


def test_digests_name_each_file_and_follow_contents(tmp_path):
    spec, path = _spec(tmp_path)
    d = weights_digests(spec)
    assert d == {"module/weights": {"path": str(path.resolve()), "sha256": file_sha256(path)}}
    path.write_bytes(path.read_bytes() + b"\0")
    assert weights_digests(spec)["module/weights"]["sha256"] != d["module/weights"]["sha256"]


def test_dcgan_faces_shipped_file_and_weights_dir_are_hashed(tmp_path):
    spec = parse_spec({"name": "d", "targets": ["mse"], "codes": {"n": 2}, "chunk_size": 2,
                       "generators": [{"name": "dcgan-faces", "spaces": ["z"]}]})
    (shipped,) = weights_digests(spec).values()
    assert shipped["path"].endswith("weights.tar") and len(shipped["sha256"]) == 64
    (tmp_path / "dir").mkdir()
    for f in ("config.json", "pytorch_model.bin"):
        (tmp_path / "dir" / f).write_bytes(f.encode())
    raw = {"name": "b", "targets": ["mse"], "codes": {"n": 2}, "chunk_size": 2,
           "generators": [{"name": "biggan-deep", "spaces": ["noise"],
                           "options": {"weights_dir": str(tmp_path / "dir")}}]}
    assert sorted(weights_digests(parse_spec(raw))) == ["biggan-deep/weights_dir/config.json",
                                                         "biggan-deep/weights_dir/pytorch_model.bin"]


def test_changed_file_refused_naming_it_old_run_accepted_with_warning(tmp_path, capsys):
    spec, path = _spec(tmp_path)
    rs = RunStore(str(tmp_path / "s"))
    lay = GroupLayout("module", "z", "mse", n=N, dim=D, chunk_size=C)
    assert rs.create("w", spec, [lay], weights=weights_digests(spec))
    assert not rs.create("w", spec, [lay], weights=weights_digests(spec))  # same contents: resumes
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(RunExistsError, match=f"weights file {path.resolve()}") as err:
        rs.create("w", spec, [lay], weights=weights_digests(spec))
    assert "\n" not in str(err.value)
    # a run made before this change: identity without hashes
    rs.run_group("w").attrs["identity"] = spec.identity()
    assert not rs.create("w", spec, [lay], weights=weights_digests(spec))
    assert "made before weights files were hashed" in capsys.readouterr().err
    assert rs.attrs("w")["identity"]["weights"] == weights_digests(spec)


def test_resume_with_replaced_weights_is_refused(ray_local, tmp_path):
    spec, path = _spec(tmp_path)
    store = tmp_path / "s"
    rs = RunStore(str(store))
    lay = GroupLayout("module", "z", "mse", n=N, dim=D, chunk_size=C)
    rs.create("w", spec, [lay], weights=weights_digests(spec))
    path.write_bytes(path.read_bytes() + b"\0")  # replaced at the same path between two runs
    with pytest.raises(RunExistsError, match=f"weights file {path.resolve()}") as err:
        run_sweep(spec, store=str(store), progress=False)  # as `gangeo resume w` would
    assert "\n" not in str(err.value)
    assert rs.done_mask("w", lay.key).sum() == 0  # nothing computed


@pytest.fixture
def ckpt_family(monkeypatch):
    """A family whose weights option is named ``ckpt_path``, registered for this test only."""
    import geometry_core.generators as generators
    from geometry_core.generators.module import load_module

    def factory(*, space, ckpt_path=None):
        return load_module(space=space, arch="torch.nn:Tanh", latent_dim=D, input_shape=[3, 2, 2],
                           allow_import=True, weights=ckpt_path)

    monkeypatch.setattr(generators, "_REGISTRY", dict(generators._REGISTRY))  # restored after the test
    generators.register_generator("tanh-ckpt", factory, weight_options=("ckpt_path",))
    return "tanh-ckpt"


def test_a_family_hashes_the_weights_option_it_declares(tmp_path, ckpt_family):
    """Issue 19: the identity hashes what a family declares, whatever the option's name."""
    path = tmp_path / "tanh.ckpt"
    torch.save({}, path)
    raw = {"name": "c", "targets": ["mse"], "codes": {"n": N, "seed": 3}, "chunk_size": C,
           "generators": [{"name": ckpt_family, "options": {"ckpt_path": str(path)}}]}
    spec = parse_spec(raw)
    want = {"tanh-ckpt/ckpt_path": {"path": str(path.resolve()), "sha256": file_sha256(path)}}
    assert weights_digests(spec) == want
    rs = RunStore(str(tmp_path / "s"))
    lay = GroupLayout(ckpt_family, "z", "mse", n=N, dim=D, chunk_size=C)
    assert rs.create("c", spec, [lay], weights=weights_digests(spec))
    path.write_bytes(path.read_bytes() + b"\0")  # replaced at the same path: resuming must be refused
    with pytest.raises(RunExistsError, match=f"weights file {path.resolve()}"):
        rs.create("c", spec, [lay], weights=weights_digests(spec))


def test_weight_files_follow_the_registration(tmp_path, ckpt_family):
    from geometry_core.generators import weight_files

    (tmp_path / "w.pt").write_bytes(b"w")
    assert weight_files(ckpt_family, {"ckpt_path": str(tmp_path / "w.pt")}) == {"ckpt_path": tmp_path / "w.pt"}
    assert weight_files(ckpt_family, {"ckpt_path": str(tmp_path / "absent.pt")}) == {}  # nothing to hash yet
    # an option the family does not declare is not a weights file of it
    assert weight_files("biggan-deep", {"checkpoint": str(tmp_path / "w.pt")}) == {}
    assert weight_files("biggan-deep", {"config": str(tmp_path / "w.pt")}) == {"config": tmp_path / "w.pt"}
