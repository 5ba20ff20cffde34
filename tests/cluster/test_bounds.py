"""Limits of a run and of a spec file (ARCHITECTURE.md, "Limits"): pure checks, no Ray, no store."""

from __future__ import annotations

import time

import pytest

from cluster.bounds import check_plan, check_resources, chunk_bytes, stored_bytes
from cluster.spec import LIMITS, SpecError, check_run_name, load_spec, parse_spec
from geometry_core.errors import ECHO_LIMIT, UsageError, clip
from tests.support.runs import tanh_spec


def test_clip_bounds_length_and_work_on_huge_and_aliased_values():
    assert clip("abc") == "'abc'" and clip("abc", bare=True) == "abc"
    huge = "m" * 30_000_000
    assert len(clip(huge)) < ECHO_LIMIT + 40 and clip(huge).endswith("(30000000 characters)")
    shared: list = ["x", "x"]
    for _ in range(40):  # 2**40 leaves if expanded: repr() alone would never finish
        shared = [shared, shared]
    t0 = time.perf_counter()
    assert len(clip(shared)) <= ECHO_LIMIT + 3
    assert time.perf_counter() - t0 < 1.0


def test_sizes_per_chunk_and_stored_are_counted_from_d():
    spec = parse_spec(tanh_spec("b", n=100, chunk_size=10))
    # 4 float32 D x D arrays per code of a chunk, plus all n codes in float64
    assert chunk_bytes(spec, 12) == 10 * 12 * 12 * 4 * 4 + 100 * 12 * 8
    # z float32, eigvals float64, eigvecs and hessian float32 (both kept by tanh_spec)
    assert stored_bytes(spec, 12) == 100 * (12 * 4 + 12 * 8 + 2 * 144 * 4)


def test_plan_refuses_topk_layers_memory_and_size_together():
    spec = parse_spec(tanh_spec("b", method="lanczos-forward", topk=12))
    check_plan(spec, [("m/z/mse", 13, "mse", [])])  # topk 12 < D 13: fine
    with pytest.raises(SpecError) as info:
        check_plan(spec, [("m/z/mse", 12, "mse", []), ("m/z/layer_x", 12, "layer:x", ["x"])])
    assert any("topk: 12 eigenpairs" in p for p in info.value.problems)
    assert any("has no layer 'x'" in p for p in info.value.problems)
    big = parse_spec(tanh_spec("b", n=LIMITS["codes"], chunk_size=LIMITS["chunk_size"]))
    with pytest.raises(SpecError, match="of memory") as info:
        check_plan(big, [("m/z/mse", 512, "mse", [])])
    assert any("would store" in p for p in info.value.problems)


def test_resources_must_fit_one_node():
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    check_resources(parse_spec(tanh_spec("b", resources={"cpus_per_worker": 2})), nodes)
    with pytest.raises(SpecError, match="64 CPUs per worker asked, the largest node has 2"):
        check_resources(parse_spec(tanh_spec("b", resources={"cpus_per_worker": 64})), nodes)
    with pytest.raises(SpecError, match="1 GPUs per worker asked, the largest node has 0"):
        check_resources(parse_spec(tanh_spec("b", resources={"gpus_per_worker": 1})), nodes)


@pytest.mark.parametrize("patch, field", [
    ({"codes": {"n": LIMITS["codes"] + 1, "seed": 0}}, "codes.n"),
    ({"codes": {"n": 8, "seed": 2**63}}, "codes.seed"),
    ({"resources": {"cpus_per_worker": float("nan")}}, "resources.cpus_per_worker"),
    ({"resources": {"gpus_per_worker": float("inf")}}, "resources.gpus_per_worker"),
    ({"chunk_size": LIMITS["chunk_size"] + 1}, "chunk_size"),
])
def test_spec_limits(patch, field):
    with pytest.raises(SpecError, match=field):
        parse_spec(tanh_spec("b", **patch))
    parse_spec(tanh_spec("b", codes={"n": LIMITS["codes"], "seed": 2**63 - 1}))  # the bounds themselves pass


def test_yaml_anchors_and_merge_keys_within_limits_still_load(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: a\nbase: &o {latent_dim: 12}\n"
                 "generators: [{name: module, options: {<<: *o, latent_dim: 12}}]\n")
    with pytest.raises(SpecError) as info:  # loads; only the unknown key 'base' is a problem
        load_spec(p)
    assert info.value.problems[0].startswith("base: unknown key")


@pytest.mark.parametrize("name", ["..", "../x", "_locks", "reduce", "a/b", "", ".hidden", "x" * 200])
def test_run_names_that_are_paths_or_reserved_are_refused(name):
    with pytest.raises(UsageError, match="RUN: expected a run name"):
        check_run_name(name)
