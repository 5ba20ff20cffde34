"""``codes: {file: z.npy}`` in the spec: a file of one code reads as a run of one, and codes of another
latent size are refused by the driver before anything is written. What ``gangeo run`` and ``resume``
make of a bad or changed file is in tests/jobs/test_codes_file.py."""

from __future__ import annotations

import numpy as np
import pytest

from cluster.driver import run_sweep
from cluster.spec import SpecError, parse_spec
from tests.support.runs import D, random_codes, tanh_spec


def test_codes_of_another_latent_size_are_refused_before_the_run(ray_local, tmp_path):
    np.save(tmp_path / "z7.npy", random_codes(4, dim=7))
    store = tmp_path / "s"
    with pytest.raises(SpecError, match=r"codes.file: .*z7.npy holds 7-d codes; expected the latent size of "
                                        r"every group: module/z/mse \(12-d\)"):
        run_sweep(parse_spec(tanh_spec("d", codes={"file": str(tmp_path / "z7.npy")})), store=str(store),
                  progress=False)
    assert not (store / "d").exists()


def test_one_code_as_a_vector_is_a_run_of_one(tmp_path):
    np.save(tmp_path / "z.npy", random_codes(1)[0])
    spec = parse_spec(tanh_spec("one", codes={"file": str(tmp_path / "z.npy")}))
    assert (spec.n_codes, spec.codes_dim, spec.codes()) == (1, D, {"file": str(tmp_path / "z.npy")})
    assert parse_spec(spec.to_dict()).identity() == spec.identity()  # the stored spec reads back the same
