"""A take of messages, handled in parts of bounded size.

An agent takes up to ``batch_max`` messages at once, a count that suits single lab reports
(~0.4 KB each). A message can also carry a batch of reports, or an envelope of 500 results, and
a take of 2,000 of those is hundreds of thousands of results, all decoded at once: a backlog of
80,000 reports in 200-report messages came as one take and took a worker to 462 MB. Each part, a
run of consecutive messages of at most ``max_bytes`` together (one message at least), is
validated, detected, stored and acknowledged on its own, in order, so a worker holds about two
parts in flight (217 MB on that backlog, with parts of 4 MiB).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def parts_by_size(items: Sequence[T], max_bytes: int, size: Callable[[T], int]) -> Iterator[Sequence[T]]:
    """Consecutive runs of ``items`` whose sizes add up to at most ``max_bytes``; an item larger alone is a part alone."""
    start, total = 0, 0
    for end, item in enumerate(items):
        grown = total + size(item)
        if grown > max_bytes and end > start:
            yield items[start:end]
            start, grown = end, size(item)
        total = grown
    if start < len(items):
        yield items[start:]
