"""Freed heap memory goes back to the system: on this machine's real glibc, measured in /proc."""

import gc

from streams.heap import HeapTrimmer
from streams.procfs import rss_mb


def _fragmented_heap(megabytes: int = 200) -> list[bytearray]:
    """Fill ``megabytes`` of heap with 8 KB blocks (under glibc's mmap threshold) and free all but
    every 32nd: the survivors pin the holes between them, which ``free`` alone never hands back."""
    blocks = [bytearray(8192) for _ in range(megabytes * 128)]
    for block in blocks:  # touch every page, so that each is resident
        block[::4096] = b"\1" * len(block[::4096])
    survivors = blocks[::32]
    del blocks
    gc.collect()
    return survivors


def test_a_trim_gives_the_holes_of_a_fragmented_heap_back():
    survivors = _fragmented_heap()
    untrimmed = rss_mb()
    assert HeapTrimmer(0).maybe_trim() is False, "0 never trims"
    assert rss_mb() > untrimmed - 20, "nothing went back without a trim"
    assert HeapTrimmer(1.0).maybe_trim() is True
    assert rss_mb() < untrimmed - 150, f"{untrimmed:.0f} MB resident before the trim, {rss_mb():.0f} after"
    assert len(survivors) == 200 * 128 // 32


def test_trims_are_spaced_by_the_interval():
    now = [100.0]
    heap = HeapTrimmer(5.0, clock=lambda: now[0])
    assert heap.maybe_trim() is True, "the first one is due"
    now[0] += 4.9
    assert heap.maybe_trim() is False
    now[0] += 0.1
    assert heap.maybe_trim() is True
    assert heap.maybe_trim() is False
