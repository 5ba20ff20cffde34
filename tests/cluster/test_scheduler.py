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


@pytest.mark.timeout(120)
def test_lost_worker_whose_replacement_never_starts_others_finish(ray_local, tmp_path):
    """A worker dies with chunks in flight and its replacement fits nowhere: the others compute every chunk once."""
    pool = StrandedPool(tmp_path, 2, crash={0})
    bar = ChunkLog()
    try:
        outcome = ChunkScheduler(pool, bar, max_attempts=3).run(chunk_tasks(8))
    finally:
        pool.close()
    assert outcome.failed == [] and outcome.computed == 8
    assert sorted(bar.done) == list(range(8)) and sorted(pool.computed()) == list(range(8))
    assert pool.replaced == 1


@pytest.mark.timeout(120)
def test_worker_that_never_starts_gets_no_chunks(ray_local, tmp_path):
    """A pool larger than the cluster holds (workers: 2, room for one): the one that starts computes them all."""
    pool = StrandedPool(tmp_path, 2, stranded={1})
    bar = ChunkLog()
    try:
        outcome = ChunkScheduler(pool, bar, max_attempts=3).run(chunk_tasks(4))
    finally:
        pool.close()
    assert outcome.failed == [] and sorted(pool.computed()) == [0, 1, 2, 3]


@pytest.mark.timeout(120)
def test_no_worker_left_gives_up_after_the_bounded_wait(ray_local, tmp_path):
    """The only worker is lost and no node has room: the chunks left fail after start_wait_s, each named once."""
    pool = StrandedPool(tmp_path, 1, crash={0})
    t0 = time.monotonic()
    try:
        outcome = ChunkScheduler(pool, ChunkLog(), max_attempts=3, start_wait_s=2).run(chunk_tasks(5))
    finally:
        pool.close()
    assert time.monotonic() - t0 < 60  # 2 s of waiting plus Ray's notice of the death; never unbounded
    assert outcome.computed == 0 and pool.computed() == []
    assert sorted(f["chunk"] for f in outcome.failed) == [0, 1, 2, 3, 4]
    assert all("no worker running" in f["error"] for f in outcome.failed)
