"""A backtest's categories run in several processes: the same alerts as one process, sooner.

Every detector but those that watch across categories (``Detector.per_category`` false: silent
labs) keeps its state by category. So each process runs those detectors over its share of the
categories, chunk for chunk as one process would: the same chunks, each closed with the same
``now`` and the same merge-window clock, an empty share included. The detectors that watch across
categories run in the calling process over every result. Each process gets its share of each
chunk as a msgpack message (msgspec, ~1.6 µs a result to encode, ~3 to decode), sent by a thread as
the process takes them, and sends back the latest version of its alerts.
Processes are spawned, not forked: the caller has threads (the progress bar).
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from multiprocessing.connection import Connection, wait

import msgspec

from detectors.base import Detector
from detectors.suite import DetectorSuite
from schemas.results import Alert, LabResult

Progress = Callable[[int, int], None]


class _Chunk(msgspec.Struct, array_like=True):
    """A process's share of one chunk, with the whole chunk's ``now`` and merge-window clock."""

    now: datetime
    horizon: datetime
    results: list[LabResult]


def share_categories(results: Iterable[LabResult], processes: int) -> list[set[str]]:
    """The categories in ``processes`` groups of about as many results each (the largest category
    first, each to the group with the fewest results so far); a group may be empty."""
    groups: list[tuple[int, int, set[str]]] = [(0, n, set()) for n in range(processes)]
    for category, count in Counter(r.category for r in results).most_common():
        size, n, members = heapq.heappop(groups)
        members.add(category)
        heapq.heappush(groups, (size + count, n, members))
    return [members for _, _, members in sorted(groups, key=lambda g: g[1])]


def latest_alerts(chunks: Sequence[Sequence[LabResult]], suite: DetectorSuite, progress: Progress | None = None) -> dict[str, Alert]:
    """Run ``suite`` chunk by chunk; the latest version of every alert, by id."""
    latest: dict[str, Alert] = {}
    done, total = 0, sum(len(c) for c in chunks)
    for chunk in chunks:
        for alert in suite.process(chunk, chunk[-1].published_at):
            latest[alert.alert_id] = alert
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    return latest


def _run_share(connection: Connection, detectors: Callable[[], list[Detector]], done) -> None:
    """A spawned process: its share of each chunk in, one message a chunk until an empty one; the
    latest version of its alerts out."""
    try:
        decoder = msgspec.msgpack.Decoder(_Chunk)
        suite = DetectorSuite([d for d in detectors() if d.per_category])
        latest: dict[str, Alert] = {}
        while message := connection.recv_bytes():
            chunk = decoder.decode(message)
            for alert in suite.process(chunk.results, chunk.now, chunk.horizon):
                latest[alert.alert_id] = alert
            done.value += len(chunk.results)
        connection.send(("alerts", list(latest.values())))
    except BaseException:  # noqa: BLE001 - whatever it was, the caller must hear why
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def _feed(
    connection: Connection, chunks: Sequence[Sequence[LabResult]], clocks: Sequence[tuple[datetime, datetime]], categories: set[str]
) -> None:
    """Send a process its share of each chunk, with the chunk's (now, horizon) from ``clocks``, as it
    takes them (a thread: the pipe blocks while the process is busy), then the empty message that
    ends them. A process gone early ends the feed: the caller hears why from its connection."""
    encoder = msgspec.msgpack.Encoder()
    try:
        for c, (now, horizon) in zip(chunks, clocks, strict=True):
            connection.send_bytes(encoder.encode(_Chunk(now, horizon, [r for r in c if r.category in categories])))
        connection.send_bytes(b"")
    except OSError:
        pass


class CategoryProcesses:
    """Spawned processes that each run every per-category detector over a share of the categories.

    Started before the file is read, so that their imports (~1.5 s: scikit-learn, scipy) overlap
    the reading. ``detectors`` makes a fresh list of every detector, in each process, so it must
    pickle: a module-level function, or a ``functools.partial`` of one."""

    def __init__(self, detectors: Callable[[], list[Detector]], processes: int) -> None:
        self.detectors = detectors
        context = multiprocessing.get_context("spawn")
        self.running: list[tuple[multiprocessing.process.BaseProcess, Connection, object]] = []
        try:
            for n in range(processes):
                ours, theirs = context.Pipe()
                done = context.Value("q", 0, lock=False)  # results run so far; written by that process only
                process = context.Process(target=_run_share, args=(theirs, detectors, done), name=f"backtest-{n}", daemon=True)
                process.start()
                theirs.close()
                self.running.append((process, ours, done))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> CategoryProcesses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def latest_alerts(self, chunks: Sequence[Sequence[LabResult]], progress: Progress | None = None) -> dict[str, Alert]:
        """``latest_alerts`` of every detector over ``chunks``: the per-category ones in the processes,
        the rest here meanwhile."""
        total = sum(len(c) for c in chunks)
        groups = share_categories(itertools.chain.from_iterable(chunks), len(self.running))  # no copy of every result
        clocks = [(c[-1].published_at, max(r.sampled_at for r in c)) for c in chunks]  # once, for every feed
        feeders = [
            threading.Thread(target=_feed, args=(connection, chunks, clocks, group), name=f"{process.name}-feed", daemon=True)
            for (process, connection, _), group in zip(self.running, groups, strict=True)
        ]
        for feeder in feeders:
            feeder.start()
        try:
            across = [d for d in self.detectors() if not d.per_category]
            latest = latest_alerts(chunks, DetectorSuite(across)) if across else {}
            waiting = {connection: process for process, connection, _ in self.running}
            while waiting:
                for connection in wait(list(waiting), timeout=0.2):
                    process = waiting.pop(connection)
                    try:
                        kind, body = connection.recv()
                    except EOFError:
                        raise RuntimeError(f"{process.name} ended without its alerts (exit code {process.exitcode})") from None
                    if kind == "error":
                        raise RuntimeError(f"{process.name} failed:\n{body}")
                    latest.update((alert.alert_id, alert) for alert in body)
                if progress is not None:
                    progress(sum(done.value for _, _, done in self.running), total)
            return latest
        finally:
            if any(feeder.is_alive() for feeder in feeders):  # a failure: end the processes, and so the feeds
                self._terminate()
            for feeder in feeders:
                feeder.join()

    def _terminate(self) -> None:
        for process, _, _ in self.running:
            if process.is_alive():
                process.terminate()

    def close(self) -> None:
        self._terminate()
        for process, connection, _ in self.running:
            process.join()
            connection.close()
        self.running = []
