"""A segment's recent results in columns, for the detectors that keep windows of them.

A window entry used to be a tuple of numbers and an ``Evidence`` object holding a 36-character
id string and a ``datetime``: some 300 bytes, kept per entry, per segment and per detector,
which made up most of a worker's memory. Here an entry is one packed 28-byte record (the id's 16
bytes, the sampling time in epoch microseconds, a code for its (city, lab) pair with the
synthetic flag) and the detector's numbers in single precision. Alerts, which are rare, get their
``Evidence`` back from the columns on demand.

Stored numbers (here, in robust baselines, lab bias's ring and the multivariate reference) are
4-byte floats: they are log levels of lab results reported to a few significant digits, and a
float keeps about 7, so storing one loses nothing the lab measured (a 60,000-report backtest gives
the same alerts, ids and evidence as with doubles; some scores move in the seventh digit, and a
median on a rounding edge can print one percent apart). Arithmetic on them stays in double precision.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta

from schemas.results import LabResult, uuid_text

_RECORD = struct.Struct("<16sqI")  # id, sampled_at in µs since the epoch, place code << 1 | synthetic
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CodeTable:
    """Names numbered once each, so that columns hold small integer codes instead of 8-byte pointers."""

    __slots__ = ("names", "codes")

    def __init__(self) -> None:
        self.names: list[Hashable] = []  # code → name
        self.codes: dict[Hashable, int] = {}  # name → code

    def code(self, name: Hashable) -> int:
        code = self.codes.get(name)
        if code is None:
            code = self.codes[name] = len(self.names)
            self.names.append(name)
        return code


_PLACES = CodeTable()  # (city, lab) pairs, for every window of the process


def _pack_id(result_id: str) -> bytes | None:
    """The 16 bytes of a lower-case UUID (every id the worker makes or accepts), or None for another shape."""
    if len(result_id) != 36 or result_id[8:24:5] != "----":
        return None
    compact = result_id.replace("-", "")
    try:
        packed = bytes.fromhex(compact)
    except ValueError:
        return None
    return packed if len(packed) == 16 and packed.hex() == compact else None


class Evidence:
    """What an alert needs of a result it cites (id, time, city, lab, synthetic)."""

    __slots__ = ("result_id", "sampled_at", "city", "lab_id", "synthetic")

    def __init__(self, result_id: str, sampled_at: datetime, city: str, lab_id: str, synthetic: bool) -> None:
        self.result_id, self.sampled_at, self.city, self.lab_id, self.synthetic = result_id, sampled_at, city, lab_id, synthetic


class Window:
    """The last ``maxlen`` results of a segment, each with ``width`` numbers, oldest first.

    A ring: once full, the newest entry overwrites the oldest in place, and the columns are
    copied once to their exact size (growing them left up to an eighth spare). Ids that are
    not UUID-shaped (hand-made results in a notebook, say) are kept as text beside the records,
    so any id round-trips. Place codes belong to the process: a pickled window carries its
    places by name.
    """

    __slots__ = ("maxlen", "width", "_records", "_numbers", "_oldest", "_added", "_odd_ids")

    def __init__(self, maxlen: int, width: int = 1) -> None:
        self.maxlen, self.width = maxlen, width
        self._records = bytearray()
        self._numbers = array("f")
        self._oldest = 0  # the slot of the oldest entry once the ring is full
        self._added = 0  # entries ever appended: the absolute position of the next one
        self._odd_ids: dict[int, str] | None = None  # absolute position → id, for ids that are not UUIDs

    def __len__(self) -> int:
        return len(self._records) // _RECORD.size

    def append(self, result: LabResult, *numbers: float) -> tuple[float, ...] | None:
        """Add a result with its numbers; returns the numbers of the entry this evicted, if any."""
        packed = _pack_id(result.result_id)
        if packed is None:
            if self._odd_ids is None:
                self._odd_ids = {}
            self._odd_ids[self._added] = result.result_id
            packed = bytes(16)
        self._added += 1
        at = result.sampled_at - _EPOCH
        micros = (at.days * 86400 + at.seconds) * 1_000_000 + at.microseconds
        place = _PLACES.code((result.city, result.lab_id)) << 1 | result.synthetic
        count = len(self._records) // _RECORD.size
        if count < self.maxlen:
            self._records += _RECORD.pack(packed, micros, place)
            self._numbers.extend(numbers)
            if count + 1 == self.maxlen:  # full from now on: drop the spare room growing left
                self._records, self._numbers = bytearray(self._records), array("f", self._numbers)
            return None
        slot, width = self._oldest, self.width
        self._oldest = (slot + 1) % self.maxlen
        if self._odd_ids:
            self._odd_ids.pop(self._added - 1 - self.maxlen, None)
        _RECORD.pack_into(self._records, slot * _RECORD.size, packed, micros, place)
        first, stored = slot * width, self._numbers
        evicted = tuple(stored[first + i] for i in range(width)) if width > 1 else (stored[first],)
        for i, number in enumerate(numbers):
            stored[first + i] = number
        return evicted

    def _slots(self, start: int = 0) -> range | list[int]:
        """Physical slots of the entries from logical position ``start`` (negative counts from the newest)."""
        count = len(self)
        first = max(0, start + count) if start < 0 else min(start, count)
        if self._oldest == 0:
            return range(first, count)
        return [(self._oldest + position) % count for position in range(first, count)]

    def column(self, index: int = 0) -> list[float]:
        """One number of every entry, oldest first."""
        values = self._numbers[index :: self.width].tolist()
        return values[self._oldest :] + values[: self._oldest] if self._oldest else values

    def evidence(self, start: int = 0) -> list[Evidence]:
        """The entries from ``start`` (negative counts from the newest) to the newest, as ``Evidence``."""
        out = []
        count = len(self)
        for slot in self._slots(start):
            packed, micros, place = _RECORD.unpack_from(self._records, slot * _RECORD.size)
            absolute = self._added - count + (slot - self._oldest) % count
            odd = self._odd_ids.get(absolute) if self._odd_ids else None
            city, lab_id = _PLACES.names[place >> 1]
            out.append(Evidence(odd or uuid_text(packed), _EPOCH + timedelta(microseconds=micros), city, lab_id, bool(place & 1)))
        return out

    def __getstate__(self) -> dict:
        codes = {place >> 1 for _, _, place in _RECORD.iter_unpack(self._records)}
        state = {name: getattr(self, name) for name in self.__slots__}
        return {**state, "places": {code: _PLACES.names[code] for code in codes}}  # by name: codes are this process's

    def __setstate__(self, state: dict) -> None:
        places = state.pop("places")
        for name, value in state.items():
            setattr(self, name, value)
        here = {code: _PLACES.code(place) for code, place in places.items()}
        for offset in range(0, len(self._records), _RECORD.size):
            packed, micros, place = _RECORD.unpack_from(self._records, offset)
            _RECORD.pack_into(self._records, offset, packed, micros, here[place >> 1] << 1 | place & 1)
