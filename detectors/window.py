"""A segment's recent results in columns, for the detectors that keep windows of them.

A window entry used to be a tuple of numbers and an ``Evidence`` object holding a 36-character
id string and a ``datetime``: some 300 bytes, kept per entry, per segment and per detector,
which made up most of a worker's memory. Here an entry is one packed record (the id's 16
bytes, the sampling time in epoch microseconds, the synthetic flag), one pointer to a shared
(city, lab) pair and the detector's numbers as doubles: about 40 bytes plus 8 a number.
Alerts, which are rare, get their ``Evidence`` back from the columns on demand.
"""

from __future__ import annotations

import struct
import sys
from array import array
from datetime import UTC, datetime, timedelta

from schemas.results import LabResult

_RECORD = struct.Struct("<16sq?")  # id, sampled_at in µs since the epoch, synthetic
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PLACES: dict[tuple[str, str], tuple[str, str]] = {}  # one (city, lab) tuple for all the windows that cite it


def _place(city: str, lab_id: str) -> tuple[str, str]:
    pair = (city, lab_id)
    return _PLACES.setdefault(pair, (sys.intern(city), sys.intern(lab_id)))


def _pack_id(result_id: str) -> bytes | None:
    """The 16 bytes of a lower-case UUID (every id the worker makes or accepts), or None for another shape."""
    if len(result_id) != 36 or result_id[8] != "-" or result_id[13] != "-" or result_id[18] != "-" or result_id[23] != "-":
        return None
    compact = result_id.replace("-", "")
    if len(compact) != 32 or not (compact.islower() or compact.isdigit()):
        return None
    try:
        return bytes.fromhex(compact)
    except ValueError:
        return None


def _unpack_id(packed: bytes) -> str:
    text = packed.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class Evidence:
    """What an alert needs of a result it cites (id, time, city, lab, synthetic)."""

    __slots__ = ("result_id", "sampled_at", "city", "lab_id", "synthetic")

    def __init__(self, result_id: str, sampled_at: datetime, city: str, lab_id: str, synthetic: bool) -> None:
        self.result_id, self.sampled_at, self.city, self.lab_id, self.synthetic = result_id, sampled_at, city, lab_id, synthetic

    @classmethod
    def of(cls, result: LabResult) -> Evidence:
        return cls(result.result_id, result.sampled_at, result.city, result.lab_id, result.synthetic)


class Window:
    """The last ``maxlen`` results of a segment (``maxlen`` None: unbounded), each with ``width`` numbers.

    Ids that are not UUID-shaped (hand-made results in a notebook, say) are kept as text beside
    the records, so any id round-trips.
    """

    __slots__ = ("maxlen", "width", "_records", "_places", "_numbers", "_odd_ids", "_dropped")

    def __init__(self, maxlen: int | None = None, width: int = 1) -> None:
        self.maxlen, self.width = maxlen, width
        self._records = bytearray()
        self._places: list[tuple[str, str]] = []
        self._numbers = array("d")
        self._odd_ids: dict[int, str] | None = None  # absolute position → id, for ids that are not UUIDs
        self._dropped = 0  # entries evicted so far: absolute position of entry 0

    def __len__(self) -> int:
        return len(self._places)

    def append(self, result: LabResult, *numbers: float) -> tuple[float, ...] | None:
        """Add a result with its numbers; returns the numbers of the entry this evicted, if any."""
        packed = _pack_id(result.result_id)
        if packed is None:
            if self._odd_ids is None:
                self._odd_ids = {}
            self._odd_ids[self._dropped + len(self._places)] = result.result_id
            packed = bytes(16)
        at = result.sampled_at - _EPOCH
        micros = (at.days * 86400 + at.seconds) * 1_000_000 + at.microseconds
        self._records += _RECORD.pack(packed, micros, result.synthetic)
        self._places.append(_place(result.city, result.lab_id))
        self._numbers.extend(numbers)
        if self.maxlen is not None and len(self._places) > self.maxlen:
            return self.popleft()
        return None

    def popleft(self) -> tuple[float, ...]:
        """Drop the oldest entry; returns its numbers."""
        width = self.width
        numbers = tuple(self._numbers[:width])
        del self._numbers[:width]
        del self._records[: _RECORD.size]
        del self._places[0]
        if self._odd_ids is not None:
            self._odd_ids.pop(self._dropped, None)
        self._dropped += 1
        return numbers

    def column(self, index: int = 0) -> list[float]:
        """One number of every entry, oldest first."""
        return self._numbers[index :: self.width].tolist()

    def numbers(self, position: int) -> tuple[float, ...]:
        """The numbers of one entry (negative positions count from the newest)."""
        if position < 0:
            position += len(self)
        start = position * self.width
        return tuple(self._numbers[start : start + self.width])

    def evidence(self, start: int = 0) -> list[Evidence]:
        """The entries from ``start`` (negative counts from the newest) to the newest, as ``Evidence``."""
        count = len(self)
        first = max(0, start + count) if start < 0 else min(start, count)
        out = []
        for position in range(first, count):
            packed, micros, synthetic = _RECORD.unpack_from(self._records, position * _RECORD.size)
            odd = self._odd_ids.get(self._dropped + position) if self._odd_ids else None
            city, lab_id = self._places[position]
            out.append(Evidence(odd or _unpack_id(packed), _EPOCH + timedelta(microseconds=micros), city, lab_id, synthetic))
        return out

    def clear(self) -> None:
        self._dropped += len(self)
        self._records.clear()
        self._places.clear()
        del self._numbers[:]
        self._odd_ids = None
