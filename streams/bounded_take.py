"""Takes and buffers bounded in bytes as well as in messages.

Faust counts what an agent holds in messages: a take of up to ``batch_max`` (2,000), and ahead of
it a buffer of up to ``stream_buffer_maxsize`` (4,096). Counts suit single lab reports (~0.4 KB),
but a message may also carry 200 reports or an envelope of 500 results (~100 KB), and then those
counts hold hundreds of megabytes. Both bounds here stop at a byte count too: a worker catching up
on a backlog of envelopes of 100,000 segments peaked at 464 MB, where it peaked at 650 without
them (``riskwatch bench worker-memory``; 385 MB keeping up).

``noack_take_bounded`` is Faust's ``Stream.noack_take`` (faust-streaming 0.11) with the byte bound
added; ``BytesBoundedQueue`` is the queue Faust puts a topic's messages in, full at a byte count too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import faust
from mode.utils.futures import notify
from mode.utils.queues import ThrowableQueue


def message_bytes(item: Any) -> int:
    """The size of an event's raw message value (0 for anything else a channel may carry)."""
    value = getattr(getattr(item, "message", None), "value", None)
    return len(value) if isinstance(value, bytes | bytearray | memoryview) else 0


class BytesBoundedQueue(ThrowableQueue):
    """A channel's buffer, full at ``maxsize`` messages or once it holds ``max_bytes`` of message
    values (one message at least: a large message alone must pass)."""

    def __init__(self, *args: Any, max_bytes: int, **kwargs: Any) -> None:
        self.max_bytes = max_bytes
        self.held_bytes = 0
        super().__init__(*args, **kwargs)

    def full(self) -> bool:
        return super().full() or (self.held_bytes >= self.max_bytes and self.qsize() > 0)

    def _put(self, item: Any) -> None:
        self.held_bytes += message_bytes(item)
        super()._put(item)

    def _get(self) -> Any:
        item = super()._get()
        self.held_bytes -= message_bytes(item)
        return item

    def clear(self) -> None:
        super().clear()
        self.held_bytes = 0


async def noack_take_bounded(
    stream: faust.StreamT, max_messages: int, max_bytes: int, within: float, size: Callable[[Any], int] = message_bytes
) -> AsyncIterator[list]:
    """Like ``stream.noack_take(max_messages, within)``: lists of events, none acknowledged; a take
    also ends once its messages hold ``max_bytes`` (the message that reaches it included)."""
    buffer: list = []
    held = 0
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    buffer_consuming: asyncio.Future | None = None
    channel_it = aiter(stream.channel)

    async def add_to_buffer(value: Any) -> Any:
        nonlocal buffer_consuming, held
        try:
            if buffer_consuming is not None:  # the agent is handling the last take
                try:
                    await buffer_consuming
                finally:
                    buffer_consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("Take buffer found current_event is None")
            buffer.append(event)
            held += size(event)
            if len(buffer) >= max_messages or held >= max_bytes:
                buffer_full.set()
                buffer_consumed.clear()
                await stream.wait(buffer_consumed)  # no more until the agent has this take
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - as Faust's take: the stream crashes with it
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    acks_were = stream.enable_acks
    stream.enable_acks = False  # the agent acknowledges a take once it is stored
    stream.add_processor(add_to_buffer)
    stream._enable_passive(channel_it)  # the stream is drained in the background, into the buffer
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(buffer_full, timeout=within)
            if buffer:
                buffer_consuming = stream.loop.create_future()
                try:
                    yield list(buffer)
                finally:
                    buffer.clear()
                    held = 0
                    notify(buffer_consuming)
                    buffer_full.clear()
                    buffer_consumed.set()
    finally:
        stream.enable_acks = acks_were
        stream._processors.remove(add_to_buffer)
