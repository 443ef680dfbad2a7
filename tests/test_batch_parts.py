"""A take split into parts of bounded size: every message once, in order, none split."""

from __future__ import annotations

import random

from streams.batch_parts import parts_by_size


def test_parts_keep_every_message_once_in_order_and_within_the_size() -> None:
    rng = random.Random(3)
    sizes = [rng.choice([400, 400, 400, 80_000, 900_000]) for _ in range(2000)]
    parts = list(parts_by_size(sizes, 1_000_000, size=lambda s: s))
    assert [s for part in parts for s in part] == sizes
    assert all(sum(part) <= 1_000_000 for part in parts)
    # greedy: a part ends only because the next message would not fit
    assert all(sum(part) + nxt[0] > 1_000_000 for part, nxt in zip(parts, parts[1:], strict=False))


def test_a_message_larger_than_the_size_is_a_part_alone_and_small_takes_stay_whole() -> None:
    assert list(parts_by_size([10, 5_000, 10], 1024, size=lambda s: s)) == [[10], [5_000], [10]]
    assert list(parts_by_size([400] * 2000, 4_194_304, size=lambda s: s)) == [[400] * 2000], "single reports: one part, as before"
    assert list(parts_by_size([], 1024, size=lambda s: s)) == []
