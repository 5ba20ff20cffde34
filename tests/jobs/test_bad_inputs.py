"""A catalogue of bad inputs through the real CLI: one line on stderr, non-zero exit, nothing written.

Specs, CLI arguments, latent files, checkpoints, store URLs, credentials and query
selectors, as data (:data:`CASES`, one pytest id each). Each case runs ``jobs.cli.main``
in-process; the directory that holds the inputs and the stores is compared before and
after, byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from jobs.cli import main
from tests.support.runs import build_run, tanh_spec


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3_server):
    """Inputs and a finished run; every case must leave this directory unchanged."""
    w = tmp_path_factory.mktemp("world")
    build_run(w / "store", "v")

    def spec(name: str, raw) -> str:
        (w / name).write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
        return str(w / name)

    good = tanh_spec("bad")
    files = {
        "yaml_invalid": spec("invalid.yaml", "name: [unclosed\n"),
        "yaml_python_tag": spec("tag.yaml", "name: !!python/object/apply:os.system ['echo pwned']\n"),
        "top_list": spec("list.yaml", "- a\n- b\n"),
        "unknown_key": spec("unknown.yaml", {**good, "colour": "red"}),
        "n_negative": spec("n.yaml", {**good, "codes": {"n": -3, "seed": 0}}),
        "method_bad": spec("method.yaml", {**good, "method": "newton"}),
        "lanczos_no_topk": spec("lanczos.yaml", {**good, "method": "lanczos-forward"}),
        "chunk_zero": spec("chunk.yaml", {**good, "chunk_size": 0}),
        "generator_unknown": spec("gen.yaml", {**good, "generators": [{"name": "no-such-gan"}]}),
        "distance_unknown": spec("dist.yaml", {**good, "targets": ["ssim9000"]}),
        "name_traversal": spec("name.yaml", {**good, "name": "../escape"}),
    }
    opts = good["generators"][0]["options"]
    torch.save(torch.nn.Tanh(), w / "pickled.pt")  # a whole pickled module: code, not weights
    files["ckpt_missing"] = spec("missing.yaml", {**good, "generators": [{"name": "module", "spaces": ["z"],
                                 "options": {**opts, "weights": str(w / "absent.pt")}}]})
    files["ckpt_pickled"] = spec("pickled.yaml", {**good, "generators": [{"name": "module", "spaces": ["z"],
                                 "options": {**opts, "weights": str(w / "pickled.pt")}}]})
    files["import_not_opted_in"] = spec("import.yaml", {**good, "generators": [{"name": "module", "spaces": ["z"],
                                        "options": {**opts, "arch": "os:system", "allow_import": False}}]})
    np.save(w / "dirs_shape.npy", np.ones((3, 7), np.float32))
    np.save(w / "dirs_nan.npy", np.full((2, 100), np.nan, np.float32))
    np.save(w / "dirs_obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (w / "dirs_text.npy").write_text("not an array")
    files.update(_bounds_inputs(w, spec, good))
    files["bucket_missing"] = s3_server.new_bucket("present").replace("present", "absent")
    files["bucket"] = s3_server.new_bucket("creds")
    return w, files


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` with ``{store}``, ``{out}``, ``{w}`` and ``{f[key]}`` filled from the world;
    ``code``: the documented exit code (ARCHITECTURE.md, "Errors"), None where any non-zero will do."""

    id: str
    argv: tuple[str, ...]
    fragment: str
    code: int | None = None


def _run(key: str, fragment: str, code: int | None = None, *extra: str) -> Case:
    return Case(f"spec_{key}", ("run", f"{{f[{key}]}}", "--store", "{out}", *extra), fragment, code)


def _bounded(key: str, fragment: str, code: int = 4) -> Case:
    return _run(key, fragment, code, "--quiet")


Q = ("query", "v", "--store", "{store}")

CASES = [
    # specs
    Case("spec_missing_file", ("run", "{w}/nope.yaml", "--store", "{out}"), "cannot read"),
    _run("yaml_invalid", "not valid YAML"),
    _run("yaml_python_tag", "not valid YAML"),
    _run("top_list", "mapping at the top level"),
    _run("unknown_key", "colour: unknown key"),
    _run("n_negative", "codes.n"),
    _run("method_bad", "method"),
    _run("lanczos_no_topk", "topk"),
    _run("chunk_zero", "chunk_size"),
    _run("generator_unknown", "unknown generator"),
    _run("distance_unknown", "unknown distance"),
    _run("name_traversal", "name"),
    # checkpoints and import paths named by a spec's generator options (checked in a worker)
    _run("ckpt_missing", "not found", None, "--quiet"),
    _run("ckpt_pickled", "pickled code", None, "--quiet"),
    _run("import_not_opted_in", "allow_import", None, "--quiet"),
    # CLI arguments (argparse: exit 2)
    Case("cli_unknown_command", ("frobnicate",), "invalid choice", 2),
    Case("cli_run_without_spec", ("run",), "required", 2),
    Case("cli_rtol_not_a_number", ("verify", "v", "--store", "{store}", "--rtol", "abc"), "invalid float", 2),
    Case("cli_format_unknown", (*Q, "--format", "xml"), "invalid choice", 2),
    # latent files
    Case("latents_wrong_shape", ("axes", "--directions", "{w}/dirs_shape.npy", "--out", "{out}"), "expected"),
    Case("latents_nan", ("axes", "--directions", "{w}/dirs_nan.npy", "--out", "{out}"), "finite"),
    Case("latents_pickled_object", ("axes", "--directions", "{w}/dirs_obj.npy", "--out", "{out}"), "directions"),
    Case("latents_not_npy", ("axes", "--directions", "{w}/dirs_text.npy", "--out", "{out}"), "directions"),
    # store URLs
    Case("store_scheme_ftp", ("ls", "--store", "ftp://host/x"), "scheme"),
    Case("store_bad_bucket_name", ("ls", "--store", "s3://Bad_Bucket"), "bucket name"),
    Case("store_missing_bucket", ("ls", "--store", "{f[bucket_missing]}"), "does not exist"),
    Case("store_unreachable_endpoint", ("ls", "--store", "{f[bucket]}", "--s3-endpoint", "http://127.0.0.1:9"),
         "cannot reach"),
    Case("store_endpoint_not_a_url", ("ls", "--store", "{f[bucket]}", "--s3-endpoint", "not a url"), "endpoint"),
    Case("store_absent_directory", ("status", "v", "--store", "{w}/absent"), "no results store"),
    Case("store_s3_empty_bucket", ("ls", "--store", "s3:///runs"), "empty bucket", 5),
    Case("run_absent", ("status", "zz", "--store", "{store}"), "no run 'zz'"),
    Case("resume_absent", ("resume", "zz", "--store", "{store}", "--quiet"), "no run 'zz'"),
    # query selectors
    Case("query_unknown_generator", (*Q, "--generator", "nosuch"), "no group matches"),
    Case("query_unknown_array", (*Q, "--array", "nosuch"), "no array 'nosuch'"),
    Case("query_index_four_parts", (*Q, "--index", "1:2:3:4"), "--index"),
    Case("query_index_text", (*Q, "--index", "abc"), "--index"),
    Case("query_index_out_of_range", (*Q, "--index", "99"), "out of bounds"),
    Case("query_table_of_3d", (*Q, "--array", "eigvecs", "--format", "table"), "at most 2 dimensions"),
    Case("query_out_no_directory", (*Q, "--format", "npy", "--out", "{w}/nodir/x.npy"), "no directory", 2),
    Case("query_index_step_0", (*Q, "--index", "0:10:0"), "a step, if any, not 0", 2),
    Case("query_array_path", (*Q, "--array", "reduce/../../x"), "--array: expected an array name", 2),
    Case("query_out_full_device", (*Q, "--format", "npy", "--out", "/dev/full"),
         "--out /dev/full: cannot write (No space left on device)", 2),
    # specs that ask for too much or are not plain YAML, pickles that run code (issue 13, findings 4, 8)
    _bounded("binary", "not UTF-8 text"),
    _bounded("deep", "nested deeper than"),
    _bounded("alias_bomb", "aliases are expanded"),
    _bounded("many_aliases", "YAML aliases"),
    _bounded("recursive_alias", "recursive alias"),
    _bounded("duplicate_key", "'name' appears twice"),
    _bounded("too_large", "larger than"),
    _bounded("long_method", "(500000 characters)"),
    _bounded("n_huge", "codes.n"),
    _bounded("seed_huge", "codes.seed"),
    _bounded("cpus_nan", "resources.cpus_per_worker"),
    _bounded("cpus_inf", "resources.cpus_per_worker"),
    _bounded("cpus_over_node", "no node can hold a worker"),
    _bounded("gpus_absent", "GPUs per worker asked"),
    _bounded("topk_over_dim", "topk: 1000 eigenpairs"),
    _bounded("layer_unknown", "has no layer 'no.such.layer'"),
    _bounded("chunk_memory", "of memory"),
    _bounded("stored_bytes", "would store"),
    _bounded("name_newline", "name: expected a run name"),
    _bounded("int_5000_digits", "a value cannot be read (Exceeds the limit (4300 digits)"),
    _bounded("ckpt_reduce", "contains pickled code (os.getcwd) and is refused", 6),
    _bounded("ckpt_reduce4", "contains pickled code (posix.getcwd) and is refused", 6),
    # run names
    Case("run_name_parent_status", ("status", "..", "--store", "{store}"), "RUN: expected a run name", 2),
    Case("run_name_parent_verify", ("verify", "..", "--store", "{store}"), "RUN: expected a run name", 2),
    Case("run_name_parent_resume", ("resume", "../x", "--store", "{store}", "--quiet"), "RUN: expected a run name", 2),
    Case("run_name_reserved_group", ("status", "_locks", "--store", "{store}"), "RUN: expected a run name", 2),
    Case("run_name_report", ("report", "../v", "--store", "{store}", "--out", "{out}"), "RUN: expected a run name", 2),
    Case("report_out_is_a_file", ("report", "v", "--store", "{store}", "--out", "{f[good]}", "--no-traversals"),
         "not a directory", 2),
    Case("schedule_cron_minute_61", ("schedule", "add", "n", "--cron", "61 * * * *", "--spec", "{f[good]}",
                                     "--address", "http://127.0.0.1:9", "--store", "{w}/schedules"),
         "field 1, minute", 8),
]


class _CallsGetcwd:
    """Pickles as a call of os.getcwd (harmless if it ever ran; it must not)."""

    def __reduce__(self):
        return (os.getcwd, ())


def _bounds_inputs(w: Path, spec, good: dict) -> dict:
    """Specs that ask for too much or are not plain YAML, a pickle that runs code (issue 13, findings 4, 8)."""
    opts = good["generators"][0]["options"]

    def tanh(dim: int, **patch) -> dict:  # G = tanh with a D = 3 * H * W latent
        side = int(round((dim / 3) ** 0.5))
        return {**good, "generators": [{"name": "module", "spaces": ["z"], "options": {
            **opts, "latent_dim": dim, "input_shape": [3, side, side]}}], **patch}

    (w / "binary.yaml").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8)
    bomb = ["a0: &a0 [lol, lol]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 30)]
    # a pickle whose loading would call os.getcwd: refused as code, never called "corrupted"
    (w / "reduce.pt").write_bytes(b"cos\ngetcwd\n(tR.")
    (w / "reduce4.pt").write_bytes(pickle.dumps(_CallsGetcwd(), protocol=4))  # framed: the loader stops early
    return {
        "binary": str(w / "binary.yaml"),
        "deep": spec("deep.yaml", "name: " + "[" * 20000 + "]" * 20000 + "\n"),
        "alias_bomb": spec("bomb.yaml", "\n".join(bomb) + "\n"),
        "many_aliases": spec("aliases.yaml", "a: &a 1\nb: [" + ", ".join(["*a"] * 100) + "]\n"),
        "recursive_alias": spec("recursive.yaml", "name: &a [*a]\n"),
        "duplicate_key": spec("duplicate.yaml", yaml.safe_dump(good) + "name: other\n"),
        "too_large": spec("large.yaml", "# " + "x" * (2 << 20) + "\n"),
        "long_method": spec("long_method.yaml", {**good, "method": "m" * 500_000}),
        "n_huge": spec("n_huge.yaml", {**good, "codes": {"n": 10**12, "seed": 0}}),
        "seed_huge": spec("seed.yaml", {**good, "codes": {"n": 8, "seed": 2**70}}),
        "cpus_nan": spec("cpus_nan.yaml", "\n".join(yaml.safe_dump(good).splitlines())
                         + "\nresources: {cpus_per_worker: .nan}\n"),
        "cpus_inf": spec("cpus_inf.yaml", yaml.safe_dump({**good, "resources": {"cpus_per_worker": float("inf")}})),
        "cpus_over_node": spec("cpus64.yaml", {**good, "resources": {"cpus_per_worker": 64}}),
        "gpus_absent": spec("gpus.yaml", {**good, "resources": {"gpus_per_worker": 1}}),
        "topk_over_dim": spec("topk.yaml", {**good, "method": "lanczos-forward", "topk": 1000}),
        "layer_unknown": spec("layer.yaml", {**good, "targets": ["layer:no.such.layer"]}),
        "chunk_memory": spec("chunk_mem.yaml", tanh(30000)),
        "stored_bytes": spec("stored.yaml", tanh(300, codes={"n": 3_000_000, "seed": 0})),
        "ckpt_reduce": spec("reduce.yaml", {**good, "generators": [{"name": "module", "spaces": ["z"],
                            "options": {**opts, "weights": str(w / "reduce.pt")}}]}),
        "ckpt_reduce4": spec("reduce4.yaml", {**good, "generators": [{"name": "module", "spaces": ["z"],
                             "options": {**opts, "weights": str(w / "reduce4.pt")}}]}),
        "name_newline": spec("newline.yaml", {**good, "name": "trail\n"}),
        "int_5000_digits": spec("digits.yaml", yaml.safe_dump(good) + "topk: " + "9" * 5000 + "\n"),
        "good": spec("good.yaml", good),
    }


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def test_the_catalogue_is_what_it_says():
    """Ids name the cases one to one (pytest ids, reruns with -k); the catalogue has not shrunk."""
    assert len(CASES) >= 71 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_one_line_its_exit_code_nothing_written(case, world, ray_local, capsys):
    w, files = world
    argv = [a.format(store=w / "store", out=w / "out", w=w, f=files) for a in case.argv]
    before = _snapshot(w)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own refusal
        rc = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc != 0 and (case.code is None or rc == case.code), (case.id, rc, err[:2000])
    assert len(lines) == 1, (case.id, err[:2000])
    assert case.fragment in lines[0], (case.id, lines[0][:2000])
    assert len(lines[0]) < 1000, (case.id, len(lines[0]))  # echoed input is clipped
    assert _snapshot(w) == before, case.id


@pytest.mark.parametrize("case_id", ["creds_wrong_secret", "creds_none"])
def test_bad_credentials(case_id, world, s3_server, capsys, monkeypatch):
    w, files = world
    before = _snapshot(w)
    if case_id == "creds_wrong_secret":
        with s3_server.enforce_auth() as (key_id, _secret):
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value-1234")
            rc = main(["ls", "--store", files["bucket"]])
        fragment = "denied"
    else:
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(w / "no-credentials"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(w / "no-config"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        rc = main(["ls", "--store", files["bucket"]])
        fragment = "no AWS credentials"
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc != 0 and len(err) == 1 and fragment in err[0], err
    assert "wrong-secret-value-1234" not in err[0]
    assert _snapshot(w) == before
