"""Takes and topic buffers bounded in bytes: a backlog of large messages must not be held whole."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust
from mode.utils.queues import FlowControlEvent

from streams.app import create_app
from streams.bounded_take import BytesBoundedQueue, message_bytes, noack_take_bounded
from streams.settings import Settings


def event(size: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(value=b"x" * size))


def test_a_take_ends_at_its_byte_bound_its_count_or_its_wait():
    app = faust.App("bounded-take-test", store="memory://", web_enabled=False, autodiscover=False)
    takes: list[list[int]] = []

    @app.agent(value_type=bytes, value_serializer="raw")
    async def collect(stream: faust.StreamT) -> None:
        async for take in noack_take_bounded(stream, max_messages=5, max_bytes=1000, within=0.5):
            takes.append([message_bytes(e) for e in take])
            for e in take:
                await stream.ack(e)

    async def run() -> None:
        async with collect.test_context() as agent:
            for size in [300] * 7 + [2000] + [10] * 12:
                await agent.put(b"x" * size)
            await asyncio.sleep(1.5)  # the last take ends by its wait

    asyncio.run(run())
    assert takes == [
        [300] * 4,  # 1,200 bytes: the message that reaches 1,000 ends the take
        [300, 300, 300, 2000],  # a message larger than the bound alone still passes
        [10] * 5,  # the count bound
        [10] * 5,
        [10] * 2,  # what came within the wait
    ]


def test_a_buffer_is_full_at_its_byte_bound_and_frees_as_it_is_read():
    async def run() -> None:
        queue = BytesBoundedQueue(maxsize=100, max_bytes=1000, flow_control=FlowControlEvent(initially_suspended=False))
        await queue.put(event(5000))  # larger than the bound, into an empty buffer: passes
        assert queue.full() and queue.held_bytes == 5000
        blocked = asyncio.ensure_future(queue.put(event(10)))
        await asyncio.sleep(0.01)
        assert not blocked.done(), "a put waits while the buffer holds its bytes"
        assert message_bytes(await queue.get()) == 5000
        await asyncio.wait_for(blocked, 1)
        assert queue.held_bytes == 10 and not queue.full()
        for _ in range(99):
            queue.put_nowait(event(1))
        assert queue.full(), "the message count bounds it too"
        queue.clear()
        assert queue.held_bytes == 0 and queue.qsize() == 0
        queue.put_nowait(None)  # what is not a message with bytes counts none
        queue.put_nowait(SimpleNamespace(message=SimpleNamespace(value=None)))
        assert queue.held_bytes == 0

    asyncio.run(run())


def test_the_worker_buffers_its_topics_in_byte_bounded_queues(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, batch_max_bytes=65536))
    queue = app.FlowControlQueue(maxsize=10, clear_on_resume=True)
    assert isinstance(queue, BytesBoundedQueue) and queue.max_bytes == 65536
