from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from producer.core.keys import BLOCK_SIZE
from worker.pipeline.chunking import chunk_count, chunk_range


@given(total=st.integers(1, 25_000), chunk_size=st.integers(1, 1000))
def test_chunks_partition_the_job_without_crossing_a_block(total: int, chunk_size: int) -> None:
    ranges = [chunk_range(n, total, chunk_size) for n in range(chunk_count(total, chunk_size))]
    covered = [i for r in ranges for i in r]
    assert covered == list(range(total))
    for r in ranges:
        assert 0 < len(r) <= chunk_size
        assert r.start // BLOCK_SIZE == (r.stop - 1) // BLOCK_SIZE


def test_one_request_sized_chunk_per_thousand() -> None:
    assert chunk_count(1_000_000, 1000) == 1000
    assert chunk_count(10_001, 1000) == 11
    assert chunk_range(10, 10_001, 1000) == range(10_000, 10_001)
    assert chunk_count(2500, 300) == 4 + 4 + 2  # 300,300,300,100 per block; 300,200 for the last
