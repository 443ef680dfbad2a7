"""One batch finishing in the background while the agent takes and validates the next.

Detecting and writing a batch waits on ClickHouse (native code, off the GIL) for much of its time;
taking the next batch from Kafka and validating it can use that time. At most one batch is
finishing at once, so detector state, writes and acknowledgements keep the order of the batches,
and an agent holds at most two batches (backpressure is unchanged in kind). A rebalance does not
wait for the batch in flight, as it did not wait for an agent's batch before: its detection and
the detectors' reset run on the one ClickHouse thread, one after the other, and a reset state is
rebuilt from ClickHouse.

A batch that fails is reported to ``on_error`` as soon as it fails: waiting for the next
``submit`` to raise it would leave the error unseen for as long as no more data arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class BatchFinisher:
    __slots__ = ("_finishing", "on_error")

    def __init__(self, on_error: Callable[[BaseException], object] | None = None) -> None:
        self._finishing: asyncio.Future | None = None
        self.on_error = on_error  # called with a batch's error when it fails (not when cancelled)

    async def submit(self, finish: Coroutine[Any, Any, None]) -> None:
        """Wait for the batch before to finish (raising its error, if any), then start this one."""
        previous, self._finishing = self._finishing, None
        try:
            if previous is not None:
                await previous
        except BaseException:
            finish.close()  # never started: its batch stays unacknowledged and is replayed
            raise
        self._finishing = asyncio.ensure_future(finish)
        if self.on_error is not None:
            self._finishing.add_done_callback(self._report)

    def _report(self, finished: asyncio.Future) -> None:
        if not finished.cancelled() and finished.exception() is not None:
            self.on_error(finished.exception())

    def cancel(self) -> None:
        """Stop the batch in flight (shutting down): unacknowledged, it is replayed on restart."""
        if self._finishing is not None:
            self._finishing.cancel()
            self._finishing = None
