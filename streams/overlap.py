"""One batch finishing in the background while the agent takes and validates the next.

Detecting and writing a batch waits on ClickHouse (native code, off the GIL) for much of its time;
taking the next batch from Kafka and validating it can use that time. At most one batch is
finishing at once, so detector state, writes and acknowledgements keep the order of the batches,
and an agent holds at most two batches (backpressure is unchanged in kind). A rebalance does not
wait for the batch in flight, as it did not wait for an agent's batch before: its detection and
the detectors' reset run on the one ClickHouse thread, one after the other, and a reset state is
rebuilt from ClickHouse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class BatchFinisher:
    __slots__ = ("_finishing",)

    def __init__(self) -> None:
        self._finishing: asyncio.Future | None = None

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

    def cancel(self) -> None:
        """Stop the batch in flight (shutting down): unacknowledged, it is replayed on restart."""
        if self._finishing is not None:
            self._finishing.cancel()
            self._finishing = None
