"""The columnar window detectors keep their recent results in: what goes in comes back out."""

from __future__ import annotations

import math
import pickle
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import numpy as np

from detectors import window as window_module
from detectors.multivariate import _Samples
from detectors.window import Window
from tests.test_detectors import result


def test_a_window_gives_back_ids_times_places_and_numbers_and_evicts_the_oldest():
    window = Window(maxlen=3, width=2)
    shanghai = timezone(timedelta(hours=8))
    results = [
        result(0),
        msgspec.structs.replace(result(1), result_id="R-1 (hand-made)", city="jinan", lab_id="JNQI"),  # not a UUID: kept as text
        msgspec.structs.replace(result(2), sampled_at=datetime(2026, 6, 1, 23, 59, 59, 999_999, tzinfo=shanghai), synthetic=True),
        msgspec.structs.replace(result(3), result_id=result(3).result_id.upper()),  # upper-case is not the canonical form: kept as text
    ]
    evicted = [window.append(r, float(n), -float(n)) for n, r in enumerate(results)]
    assert evicted == [None, None, None, (0.0, -0.0)] and len(window) == 3
    assert window.column(0) == [1.0, 2.0, 3.0] and window.column(1) == [-1.0, -2.0, -3.0]
    back = window.evidence()
    assert [e.result_id for e in back] == [r.result_id for r in results[1:]]
    assert [e.sampled_at for e in back] == [r.sampled_at for r in results[1:]]  # the same instants, to the microsecond
    assert all(e.sampled_at.tzinfo is UTC for e in back)
    assert [(e.city, e.lab_id, e.synthetic) for e in back] == [("jinan", "JNQI", False), ("zibo", "ZBQI", True), ("zibo", "ZBQI", False)]
    assert [e.result_id for e in window.evidence(-2)] == [r.result_id for r in results[2:]]
    assert [e.result_id for e in window.evidence(-10)] == [r.result_id for r in results[1:]]
    copy = pickle.loads(pickle.dumps(window))
    assert [e.result_id for e in copy.evidence()] == [e.result_id for e in back] and copy.column(1) == window.column(1)
    assert window.append(results[0], 4.0, -4.0) == (1.0, -1.0)  # the ring wraps: the hand-made id leaves, the oldest is now 2
    assert window.column(0) == [2.0, 3.0, 4.0] and [e.result_id for e in window.evidence()] == [
        r.result_id for r in [*results[2:], results[0]]
    ]


def test_a_window_holds_its_records_at_their_exact_size_and_nothing_when_empty():
    window = Window(maxlen=4)
    assert type(window._entries) is bytes and window._entries == b"", "empty: the shared empty bytes, no buffer of its own"
    for n in range(4):
        window.append(result(n), float(n))
        assert len(window._entries) == (n + 1) * 26, "no spare room while growing"
    assert isinstance(window._entries, bytearray), "full: one buffer, written in place"
    window.append(result(4), 4.0)
    assert len(window._entries) == 4 * 26 and window.column() == [1.0, 2.0, 3.0, 4.0]
    growing = Window(maxlen=4)
    growing.append(result(0), 0.0)
    copy = pickle.loads(pickle.dumps(growing))
    copy.append(result(1), 1.0)
    assert copy.column() == [0.0, 1.0] and len(copy._entries) == 2 * 26
    window.clear()
    assert window._entries == b"" and len(window) == 0


def test_a_full_window_keeps_the_last_entries_in_order_however_often_it_wraps():
    window = Window(maxlen=7)
    for n in range(100):
        evicted = window.append(result(n), float(n))
        assert evicted == (None if n < 7 else (float(n - 7),))
        assert window.column() == [float(k) for k in range(max(0, n - 6), n + 1)]
    assert [e.result_id for e in window.evidence(-3)] == [result(n).result_id for n in (97, 98, 99)]


def test_a_run_s_window_keeps_the_results_while_the_chart_runs_and_empties_at_rest():
    window = Window(maxlen=3)
    for n, running in enumerate([True, True, False, True, True, True, True]):
        window.follow_run(running, result(n), float(n))
        if n == 1:
            assert window.column() == [0.0, 1.0]
        if n == 2:
            assert len(window) == 0 and window.evidence() == []  # at rest: nothing before can be cited
    assert window.column() == [4.0, 5.0, 6.0]  # a long run keeps its newest maxlen results
    assert [e.result_id for e in window.evidence()] == [result(n).result_id for n in (4, 5, 6)]


def test_a_categorys_reference_samples_keep_the_newest_rows_in_order_and_grow_columns_for_new_items():
    samples = _Samples(size=25)
    expected = []
    for n in range(40):
        row = [float(n)] if n < 10 else [float(n), -float(n)]  # a second item appears with sample 10
        samples.append(row)
        expected.append(row + [math.nan] * (2 - len(row)))
        assert len(samples) == min(n + 1, 25)
    assert np.array_equal(samples.matrix(), np.array(expected[-25:]), equal_nan=True)


def test_a_pickled_window_names_its_places_so_another_process_reads_them_right(monkeypatch):
    window = Window(maxlen=4)
    for n, (city, lab) in enumerate([("zibo", "ZBQI"), ("jinan", "JNQI"), ("zibo", "ZBQI")]):
        window.append(msgspec.structs.replace(result(n), city=city, lab_id=lab), float(n))
    payload = pickle.dumps(window)
    # another process numbers its places in its own order: here, a fresh table with others first
    elsewhere = window_module.CodeTable()
    elsewhere.code(("taian", "TAQI")), elsewhere.code(("jinan", "JNQI"))
    monkeypatch.setattr(window_module, "_PLACES", elsewhere)
    copy = pickle.loads(payload)
    assert [(e.city, e.lab_id) for e in copy.evidence()] == [("zibo", "ZBQI"), ("jinan", "JNQI"), ("zibo", "ZBQI")]
    assert [e.result_id for e in copy.evidence()] == [result(n).result_id for n in range(3)] and copy.column() == [0.0, 1.0, 2.0]
    copy.append(result(3), 3.0)  # filling it up keeps everything
    assert [e.lab_id for e in copy.evidence()] == ["ZBQI", "JNQI", "ZBQI", "ZBQI"] and len(copy) == 4


def _crowd_places(monkeypatch) -> None:
    """This process already knows as many places as a record can name: the next one does not fit."""
    crowded = window_module.CodeTable()
    crowded.code(("zibo", "ZBQI"))
    while len(crowded.names) < window_module._PLACE_CODES:
        crowded.code(("city", f"LAB-{len(crowded.names)}"))
    monkeypatch.setattr(window_module, "_PLACES", crowded)


def test_entries_that_do_not_fit_a_record_are_kept_whole_and_leave_with_their_entry(monkeypatch):
    _crowd_places(monkeypatch)
    window = Window(maxlen=3)
    odd = [
        msgspec.structs.replace(result(0), sampled_at=datetime(1969, 12, 31, 23, 0, tzinfo=UTC)),  # before the epoch
        msgspec.structs.replace(result(1), sampled_at=datetime(2107, 1, 1, tzinfo=UTC)),  # past 4-byte seconds
        msgspec.structs.replace(result(2), city="weihai", lab_id="WHQI"),  # the 32,769th place
    ]
    for n, r in enumerate(odd):
        window.append(r, float(n))
    back = window.evidence()
    assert sorted(window._unpacked) == [0, 1, 2]
    assert [(e.result_id, e.sampled_at, e.city, e.lab_id) for e in back] == [(r.result_id, r.sampled_at, r.city, r.lab_id) for r in odd]
    copy = pickle.loads(pickle.dumps(window))
    assert [e.sampled_at for e in copy.evidence()] == [r.sampled_at for r in odd] and copy.column() == [0.0, 1.0, 2.0]
    for n in range(3, 6):  # ordinary results in a known place push them out, and nothing is kept for them any more
        window.append(msgspec.structs.replace(result(n), city="city", lab_id="LAB-7"), float(n))
    assert window._unpacked == {} and [e.result_id for e in window.evidence()] == [result(n).result_id for n in range(3, 6)]
    assert [e.lab_id for e in window.evidence()] == ["LAB-7"] * 3


def test_a_window_read_by_a_process_that_knows_too_many_places_keeps_those_entries_whole(monkeypatch):
    window = Window(maxlen=2)
    window.append(msgspec.structs.replace(result(0), city="weihai", lab_id="WHQI"), 0.0)
    window.append(result(1), 1.0)
    payload = pickle.dumps(window)
    _crowd_places(monkeypatch)
    copy = pickle.loads(payload)
    assert [(e.result_id, e.city, e.lab_id) for e in copy.evidence()] == [
        (result(0).result_id, "weihai", "WHQI"),
        (result(1).result_id, result(1).city, result(1).lab_id),
    ]
    assert [e.sampled_at for e in copy.evidence()] == [result(0).sampled_at, result(1).sampled_at]


class _Extended(Window):  # as detectors extend it with their segment's state
    __slots__ = ("extra",)

    def __init__(self, maxlen: int) -> None:
        super().__init__(maxlen)
        self.extra = 0.5


def test_a_window_extended_with_more_slots_pickles_with_all_of_them():
    window = _Extended(maxlen=2)
    for n in range(3):
        window.append(result(n), float(n))
    copy = pickle.loads(pickle.dumps(window))
    assert copy.extra == 0.5 and copy.column() == [1.0, 2.0] and [e.result_id for e in copy.evidence()] == [result(1).result_id, result(2).result_id]
