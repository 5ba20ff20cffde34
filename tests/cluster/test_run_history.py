"""Each run or resume of a run that computes appends an attempt to its history; ``timing`` sums
them, so resuming keeps what the first run measured (``status`` and the report show both). Rerunning
a finished run answers from the store and records nothing (cluster/finished.py)."""

from __future__ import annotations

import pytest

from cluster.driver import run_sweep
from cluster.report import build_report
from cluster.run_state import attempt_attrs, timing_report
from cluster.spec import parse_spec
from cluster.store import RunStore
from tests.support.faults import always_fail
from tests.support.runs import tanh_spec

KEY = "module/z/mse"


def _raw(name: str) -> dict:
    return tanh_spec(name, n=2, chunk_size=1, resources={"workers": 1})  # G(z) = tanh(z): cheap chunks


@pytest.mark.slow  # three sweeps, one with retried failures: ~20 s on a loaded 2-core machine
def test_rerun_and_resume_append_attempts_and_sum_them(ray_local, tmp_path):
    store = str(tmp_path / "s")
    spec = parse_spec(_raw("h"))
    first = run_sweep(spec, store=store, progress=False, worker_cls=always_fail(KEY))  # every chunk fails
    assert first["status"] == "partial"
    run_sweep(spec, store=store, progress=False)                                      # resumes: computes both
    again = run_sweep(spec, store=store, progress=False)                              # complete: nothing left
    assert again["computed"] == 0 and "nothing_to_do" in again
    times = timing_report(RunStore(store).attrs("h"))  # what `gangeo status` prints as timing and history
    hist = times["attempts"]
    assert [(a["status"], a["points"], a["chunks_computed"], a["chunks_skipped"], a["chunks_failed"])
            for a in hist] == [("partial", 2, 0, 0, 2), ("complete", 2, 2, 0, 0)]  # the no-op rerun: no attempt
    assert all(a["finished"] >= a["started"] and a["seconds"] > 0 for a in hist)
    cum = times["cumulative"]
    assert (cum["attempts"], cum["points"], cum["chunks_computed"], cum["chunks_failed"]) == (2, 4, 2, 2)
    assert abs(cum["seconds"] - sum(a["seconds"] for a in hist)) < 0.01  # not the last attempt's 0.0x s
    assert cum["first_started"] == hist[0]["started"] and cum["last_finished"] == hist[-1]["finished"]
    # The report lists the same attempts.
    build_report(store, "h", out_dir=tmp_path / "r", traversals=False, allow_import=True, progress=False)
    html = (tmp_path / "r" / "h.html").read_text()
    table = html[html.index("<th>chunks skipped</th>"):]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 2 and "<td>partial</td>" in table


def test_a_run_from_before_histories_counts_its_timing_as_one_attempt():
    old = {"status": "complete", "timing": {"started": "2024-01-01T00:00:00Z", "seconds": 12.5, "points": 64,
                                            "chunks_computed": 4, "points_per_second": 5.12}}
    assert timing_report(old)["cumulative"]["seconds"] == 12.5
    new = attempt_attrs(old, {"started": "2024-01-02T00:00:00Z", "finished": "2024-01-02T00:00:01Z",
                              "seconds": 0.5, "points": 0, "chunks_computed": 0, "chunks_skipped": 4,
                              "status": "complete"})
    assert [a["seconds"] for a in new["history"]] == [12.5, 0.5]
    assert (new["timing"]["seconds"], new["timing"]["points"], new["timing"]["attempts"]) == (13.0, 64, 2)
