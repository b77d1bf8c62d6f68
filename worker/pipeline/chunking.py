"""Chunk geometry: a chunk is an index range of a job, inside one block.

Pure functions. A chunk never crosses a message block, so sending it reads
one Redis string and writes one outcome hash.
"""

from __future__ import annotations

from producer.core.keys import BLOCK_SIZE


def chunks_per_block(chunk_size: int) -> int:
    return -(-BLOCK_SIZE // chunk_size)


def chunk_count(total: int, chunk_size: int) -> int:
    full_blocks, rest = divmod(total, BLOCK_SIZE)
    return full_blocks * chunks_per_block(chunk_size) + -(-rest // chunk_size)


def chunk_range(chunk_no: int, total: int, chunk_size: int) -> range:
    """The job indices of chunk ``chunk_no``."""
    block_no, within = divmod(chunk_no, chunks_per_block(chunk_size))
    block_start = block_no * BLOCK_SIZE
    start = block_start + within * chunk_size
    end = min(start + chunk_size, block_start + BLOCK_SIZE, total)
    if start >= end:
        raise ValueError(f"chunk {chunk_no} is outside a job of {total} messages")
    return range(start, end)
