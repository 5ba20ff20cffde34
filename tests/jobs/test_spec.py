"""``gangeo run`` of a spec with problems: one line per problem on stderr, the spec exit code, nothing written.
The spec's own checks are in tests/cluster/test_spec.py."""

from __future__ import annotations

import yaml

from jobs.cli import EXIT_CODES, main


def test_cli_reports_each_problem_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "generators": [{"name": "dcgan-faces"}], "targets": ["mse"],
                                   "codes": {"n": 0}, "chunk_size": 4, "method": "x"}))
    store = tmp_path / "store"
    assert main(["run", str(spec), "--store", str(store), "--quiet"]) == EXIT_CODES["spec"]
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 2
    assert lines[0].startswith("gangeo run: codes.n:") and lines[1].startswith("gangeo run: method:")
    assert not store.exists()
