"""A segment's recent results in packed records, for the detectors that keep windows of them.

A window entry used to be a tuple of numbers and an ``Evidence`` object holding a 36-character
id string and a ``datetime``: some 300 bytes, kept per entry, per segment and per detector,
which made up most of a worker's memory. Here an entry is one packed record in a single
``bytearray``: the id's 16 bytes, the sampling time in whole seconds since the epoch (4 bytes,
until 2106), a 2-byte code for its (city, lab) pair with the synthetic flag, then the
detector's numbers in single precision; 22 bytes and 4 a number. An entry that does not fit
(an id that is not a UUID, a time with a fraction of a second or outside that range, a place
beyond the first 32,768) keeps its ``Evidence`` whole beside the records. Alerts, which are rare, get
their ``Evidence`` back from the records on demand.

Stored numbers (here, in robust baselines, lab bias's ring and the multivariate reference) are
4-byte floats: they are log levels of lab results reported to a few significant digits, and a
float keeps about 7, so storing one loses nothing the lab measured (a 60,000-report backtest gives
the same alerts, ids and evidence as with doubles; some scores move in the seventh digit, and a
median on a rounding edge can print one percent apart). Arithmetic on them stays in double precision.
"""

from __future__ import annotations

import functools
import struct
import sys
from collections.abc import Hashable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from schemas.results import LabResult, uuid_text

_RECORD = struct.Struct("<16sIH")  # id, sampled_at in seconds since the epoch, place code << 1 | synthetic
_PLACE_CODES = 1 << 15  # codes that fit the record's 15 bits
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@functools.cache
def _layout(width: int) -> tuple[struct.Struct, struct.Struct]:
    """A whole entry of ``width`` numbers, and its numbers alone (read at the record's end)."""
    return struct.Struct(f"<16sIH{width}f"), struct.Struct(f"<{width}f")


@functools.cache
def _column(width: int, index: int) -> struct.Struct:
    """Number ``index`` of an entry, skipping the rest: for ``iter_unpack`` over the records."""
    before, after = _RECORD.size + 4 * index, 4 * (width - index - 1)
    return struct.Struct(f"<{before}xf{after}x")


_Name = TypeVar("_Name", bound=Hashable)


def interned(name: _Name) -> _Name:
    """A name, or each name in a key, as the process's one copy (``sys.intern``); anything else as it is.

    A key outlives the result it was taken from, and each result's names are its own (decoded from
    its message): kept as they came, every segment's key would hold its own copies of the same
    category, item, city and lab names, and keep alive the memory of the batch each came in
    (`riskwatch bench state`, 10,000 segments: 315 B a segment of the ~1.1 KB that results decoded
    as the worker gets them cost over shared strings). Called where state for a new key is made,
    never per result."""
    if type(name) is str:
        return sys.intern(name)
    if type(name) is tuple:
        return tuple(sys.intern(part) if type(part) is str else part for part in name)
    return name


class CodeTable:
    """Names numbered once each, so that columns hold small integer codes instead of 8-byte pointers."""

    __slots__ = ("names", "codes")

    def __init__(self) -> None:
        self.names: list[Hashable] = []  # code → name
        self.codes: dict[Hashable, int] = {}  # name → code

    def code(self, name: Hashable) -> int:
        code = self.codes.get(name)
        if code is None:
            name = interned(name)
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


def _pack(result: LabResult) -> tuple[bytes | None, int, int]:
    """A result's id, time and place as a record holds them; None for the id when one of them does not fit."""
    packed = _pack_id(result.result_id)
    at = result.sampled_at - _EPOCH
    seconds = at.days * 86400 + at.seconds
    place = _PLACES.code((result.city, result.lab_id))
    if packed is None or at.microseconds or not 0 <= seconds < 1 << 32 or place >= _PLACE_CODES:
        return None, 0, 0
    return packed, seconds, place << 1 | result.synthetic


class Evidence:
    """What an alert needs of a result it cites (id, time, city, lab, synthetic)."""

    __slots__ = ("result_id", "sampled_at", "city", "lab_id", "synthetic")

    def __init__(self, result_id: str, sampled_at: datetime, city: str, lab_id: str, synthetic: bool) -> None:
        self.result_id, self.sampled_at, self.city, self.lab_id, self.synthetic = result_id, sampled_at, city, lab_id, synthetic


def _record_evidence(record: tuple[bytes, int, int], places: Sequence[tuple[str, str]] | dict[int, tuple[str, str]]) -> Evidence:
    """The ``Evidence`` a record holds, its place named by ``places`` (this process's, or a pickle's)."""
    packed, seconds, place = record
    city, lab_id = places[place >> 1]
    return Evidence(uuid_text(packed), _EPOCH + timedelta(seconds=seconds), city, lab_id, bool(place & 1))


def _slots_of(cls: type) -> list[str]:
    """Every slot of a class and its bases: a detector's segment state may extend ``Window`` with its own."""
    return [name for klass in cls.__mro__ for name in klass.__dict__.get("__slots__", ())]


class Window:
    """The last ``maxlen`` results of a segment, each with ``width`` numbers, oldest first.

    A ring: once full, the newest entry overwrites the oldest in place. Until then the records
    are immutable ``bytes`` of their exact size, one copy an entry (a few hundred bytes): an empty
    window shares ``b""`` instead of holding a 57-byte ``bytearray``, and a growing one no spare
    room (most windows are the short runs of charts that return to rest). Once full they become
    one ``bytearray``, written in place. Place codes belong to the process: a pickled window
    carries its places by name.
    """

    __slots__ = ("maxlen", "width", "_entries", "_added", "_unpacked")

    def __init__(self, maxlen: int, width: int = 1) -> None:
        self.maxlen, self.width = maxlen, width
        self._entries: bytes | bytearray = b""
        self._added = 0  # entries ever appended: the absolute position of the next one
        self._unpacked: dict[int, Evidence] | None = None  # absolute position → the evidence of an entry that does not fit a record

    def __len__(self) -> int:
        return len(self._entries) // self._size

    @property
    def _size(self) -> int:
        """Bytes an entry: its record and its numbers."""
        return _layout(self.width)[0].size

    def append(self, result: LabResult, *numbers: float) -> tuple[float, ...] | None:
        """Add a result with its numbers; returns the numbers of the entry this evicted, if any."""
        entry, stored = _layout(self.width)
        packed, seconds, place = _pack(result)
        if self._unpacked and self._added - self.maxlen in self._unpacked:
            del self._unpacked[self._added - self.maxlen]  # its entry leaves now
        if packed is None:
            if self._unpacked is None:
                self._unpacked = {}
            self._unpacked[self._added] = Evidence(
                result.result_id, result.sampled_at.astimezone(UTC), result.city, result.lab_id, result.synthetic
            )
            packed, seconds, place = bytes(16), 0, 0
        self._added += 1
        count = len(self._entries) // entry.size
        if count < self.maxlen:
            self._entries += entry.pack(packed, seconds, place, *numbers)
            if count + 1 == self.maxlen:  # full from now on: written in place
                self._entries = bytearray(self._entries)
            return None
        slot = (self._added - 1) % self.maxlen  # the oldest's
        evicted = stored.unpack_from(self._entries, slot * entry.size + _RECORD.size)
        entry.pack_into(self._entries, slot * entry.size, packed, seconds, place, *numbers)
        return evicted

    def clear(self) -> None:
        """Forget every entry (the ring starts afresh, its room given back); nothing to do when empty,
        as it mostly is where detectors clear a window at rest after every result."""
        if self._added:
            self._entries, self._added, self._unpacked = b"", 0, None

    def follow_run(self, running: bool, result: LabResult, *numbers: float) -> None:
        """The evidence of a chart's run: while the chart runs after a result, the result joins it;
        at rest the run is over, and nothing before it can be cited again, so the window empties."""
        if running:
            self.append(result, *numbers)
        else:
            self.clear()

    @property
    def _oldest(self) -> int:
        """The slot of the oldest entry: 0 until the ring is full, then where the next entry goes."""
        return self._added % self.maxlen if self._added >= self.maxlen else 0

    def _slots(self, start: int = 0) -> range | list[int]:
        """Physical slots of the entries from logical position ``start`` (negative counts from the newest)."""
        count = len(self)
        first = max(0, start + count) if start < 0 else min(start, count)
        if self._oldest == 0:
            return range(first, count)
        return [(self._oldest + position) % count for position in range(first, count)]

    def column(self, index: int = 0) -> list[float]:
        """One number of every entry, oldest first."""
        values = [value for (value,) in _column(self.width, index).iter_unpack(self._entries)]
        return values[self._oldest :] + values[: self._oldest] if self._oldest else values

    def evidence(self, start: int = 0) -> list[Evidence]:
        """The entries from ``start`` (negative counts from the newest) to the newest, as ``Evidence``."""
        out = []
        for slot in self._slots(start):
            whole = self._unpacked.get(self._absolute(slot)) if self._unpacked else None
            out.append(whole or _record_evidence(_RECORD.unpack_from(self._entries, slot * self._size), _PLACES.names))
        return out

    def _absolute(self, slot: int) -> int:
        """The absolute position of the entry in physical ``slot``."""
        count = len(self)
        return self._added - count + (slot - self._oldest) % count

    def _packed_slots(self) -> list[int]:
        """The slots whose entries live in their records (not kept whole)."""
        return [slot for slot in range(len(self)) if not (self._unpacked and self._absolute(slot) in self._unpacked)]

    def __getstate__(self) -> dict:
        codes = {_RECORD.unpack_from(self._entries, slot * self._size)[2] >> 1 for slot in self._packed_slots()}
        state = {name: getattr(self, name) for name in _slots_of(type(self))}
        return {**state, "places": {code: _PLACES.names[code] for code in codes}}  # by name: codes are this process's

    def __setstate__(self, state: dict) -> None:
        places = state.pop("places")
        for name, value in state.items():
            setattr(self, name, value)
        here = {code: _PLACES.code(place) for code, place in places.items()}
        entries = bytearray(self._entries)  # the codes rewritten in a copy: a window not yet full holds bytes
        for slot in self._packed_slots():
            record = packed, seconds, place = _RECORD.unpack_from(entries, slot * self._size)
            code = here[place >> 1]
            if code < _PLACE_CODES:
                _RECORD.pack_into(entries, slot * self._size, packed, seconds, code << 1 | place & 1)
                continue
            if self._unpacked is None:  # this process knows more places than a record can name: keep the entry whole
                self._unpacked = {}
            self._unpacked[self._absolute(slot)] = _record_evidence(record, places)
        self._entries = entries if len(self) == self.maxlen else bytes(entries)
