"""The chunk scheduler when workers are lost and nothing can take their place (issue 17).

On a cluster, a worker whose node is lost is replaced by an actor that may fit on
no node any more. Embedded Ray (2 CPUs) stands in for that: replacements ask for
a custom resource no node has, so they wait for a node forever, as on the cluster.
"""

from __future__ import annotations

import time

import pytest

from cluster.scheduler import ChunkScheduler
from tests.support.chunk_pools import ChunkLog, StrandedPool, chunk_tasks


def _schedule(pool: StrandedPool, n_chunks: int, **kw):
    """Run ``n_chunks`` chunks through ``pool``, closing it after; (outcome, the progress log)."""
    bar = ChunkLog()
    try:
        return ChunkScheduler(pool, bar, max_attempts=3, **kw).run(chunk_tasks(n_chunks)), bar
    finally:
        pool.close()


@pytest.mark.timeout(120)
def test_lost_worker_whose_replacement_never_starts_others_finish(ray_local, tmp_path):
    """A worker dies with chunks in flight and its replacement fits nowhere: the others compute every chunk once."""
    pool = StrandedPool(tmp_path, 2, crash={0}).wait_started()
    outcome, bar = _schedule(pool, 8)
    assert outcome.failed == [] and outcome.computed == 8
    assert sorted(bar.done) == list(range(8)) and sorted(pool.computed()) == list(range(8))
    assert pool.replaced == 1


@pytest.mark.timeout(120)
def test_worker_that_never_starts_gets_no_chunks(ray_local, tmp_path):
    """A pool larger than the cluster holds (workers: 2, room for one): the one that starts computes them all."""
    pool = StrandedPool(tmp_path, 2, stranded={1})
    outcome, _ = _schedule(pool, 4)
    assert outcome.failed == [] and sorted(pool.computed()) == [0, 1, 2, 3]


@pytest.mark.timeout(120)
def test_no_worker_left_gives_up_after_the_bounded_wait(ray_local, tmp_path):
    """The only worker is lost and no node has room: the chunks left fail after start_wait_s, each named once."""
    pool = StrandedPool(tmp_path, 1, crash={0})
    t0 = time.monotonic()
    outcome, _ = _schedule(pool, 5, start_wait_s=2)
    assert time.monotonic() - t0 < 60  # 2 s of waiting plus Ray's notice of the death; never unbounded
    assert outcome.computed == 0 and pool.computed() == []
    assert sorted(f["chunk"] for f in outcome.failed) == [0, 1, 2, 3, 4]
    assert all("no worker running" in f["error"] for f in outcome.failed)


@pytest.mark.timeout(120)
def test_an_interrupt_that_rays_wait_drops_still_ends_the_run(ray_local, tmp_path, monkeypatch):
    """SIGINT arrives inside a wait whose KeyboardInterrupt is lost (as a Ray status can be): the loop raises it."""
    import os
    import signal

    import ray

    real_wait, calls = ray.wait, []

    def dropping_wait(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1.0)  # the handler runs here
            except KeyboardInterrupt:
                pass  # dropped, as a status some of Ray's paths lose
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(ray, "wait", dropping_wait)
    pool = StrandedPool(tmp_path, 2).wait_started()
    with pytest.raises(KeyboardInterrupt):
        _schedule(pool, 40)
    assert len(calls) == 2  # raised at the next turn of the loop, not at the end of the run
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the sweep's latch is gone
