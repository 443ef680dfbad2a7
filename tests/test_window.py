"""The columnar window detectors keep their recent results in: what goes in comes back out."""

from __future__ import annotations

import dataclasses
import math
import pickle
from datetime import UTC, datetime, timedelta, timezone

import numpy as np

from detectors.multivariate import _Samples
from detectors.window import Window
from tests.test_detectors import result


def test_a_window_gives_back_ids_times_places_and_numbers_and_evicts_the_oldest():
    window = Window(maxlen=3, width=2)
    shanghai = timezone(timedelta(hours=8))
    results = [
        result(0),
        dataclasses.replace(result(1), result_id="R-1 (hand-made)", city="jinan", lab_id="JNQI"),  # not a UUID: kept as text
        dataclasses.replace(result(2), sampled_at=datetime(2026, 6, 1, 23, 59, 59, 999_999, tzinfo=shanghai), synthetic=True),
        dataclasses.replace(result(3), result_id=result(3).result_id.upper()),  # upper-case is not the canonical form: kept as text
    ]
    evicted = [window.append(r, float(n), -float(n)) for n, r in enumerate(results)]
    assert evicted == [None, None, None, (0.0, -0.0)] and len(window) == 3
    assert window.column(0) == [1.0, 2.0, 3.0] and window.column(1) == [-1.0, -2.0, -3.0] and window.numbers(-1) == (3.0, -3.0)
    back = window.evidence()
    assert [e.result_id for e in back] == [r.result_id for r in results[1:]]
    assert [e.sampled_at for e in back] == [r.sampled_at for r in results[1:]]  # the same instants, to the microsecond
    assert all(e.sampled_at.tzinfo is UTC for e in back)
    assert [(e.city, e.lab_id, e.synthetic) for e in back] == [("jinan", "JNQI", False), ("zibo", "ZBQI", True), ("zibo", "ZBQI", False)]
    assert [e.result_id for e in window.evidence(-2)] == [r.result_id for r in results[2:]]
    assert [e.result_id for e in window.evidence(-10)] == [r.result_id for r in results[1:]]
    copy = pickle.loads(pickle.dumps(window))
    assert [e.result_id for e in copy.evidence()] == [e.result_id for e in back] and copy.column(1) == window.column(1)
    assert window.popleft() == (1.0, -1.0) and window.evidence()[0].result_id == results[2].result_id
    window.clear()
    assert len(window) == 0 and window.evidence() == [] and window.column() == []
    window.append(results[1], 7.0, 8.0)
    assert window.evidence()[0].result_id == "R-1 (hand-made)"


def test_an_unbounded_window_keeps_everything():
    window = Window()
    for n in range(100):
        assert window.append(result(n), n) is None
    assert len(window) == 100 and window.column() == [float(n) for n in range(100)]


def test_a_categorys_reference_samples_keep_the_newest_rows_in_order_and_grow_columns_for_new_items():
    samples = _Samples(size=25)
    expected = []
    for n in range(40):
        row = [float(n)] if n < 10 else [float(n), -float(n)]  # a second item appears with sample 10
        samples.append(row)
        expected.append(row + [math.nan] * (2 - len(row)))
        assert len(samples) == min(n + 1, 25)
    assert np.array_equal(samples.matrix(), np.array(expected[-25:]), equal_nan=True)
