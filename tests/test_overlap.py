"""The agents' one-batch-ahead finishing: overlap, order, errors, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from streams.overlap import BatchFinisher


async def _batch(log: list[str], name: str, gate: asyncio.Event | None = None, error: Exception | None = None) -> None:
    log.append(f"{name} started")
    if gate is not None:
        await gate.wait()
    if error is not None:
        raise error
    log.append(f"{name} finished")


def test_the_next_batch_is_taken_while_one_finishes_and_batches_finish_in_order() -> None:
    async def scenario() -> list[str]:
        finisher, log, gate = BatchFinisher(), [], asyncio.Event()
        await asyncio.wait_for(finisher.submit(_batch(log, "1", gate)), timeout=5)  # returns before batch 1 is done
        await asyncio.sleep(0)
        log.append("2 taken and validated")  # the agent goes on while batch 1 is still finishing
        second = asyncio.ensure_future(finisher.submit(_batch(log, "2")))
        await asyncio.sleep(0.01)
        assert not second.done()  # batch 2 waits for batch 1
        gate.set()
        await second
        await finisher.submit(_batch(log, "3"))  # returns once batch 2 has finished
        return log

    assert asyncio.run(scenario())[:5] == ["1 started", "2 taken and validated", "1 finished", "2 started", "2 finished"]


def test_a_failed_batch_stops_the_next_one_before_it_starts() -> None:
    async def scenario() -> list[str]:
        finisher, log = BatchFinisher(), []
        await finisher.submit(_batch(log, "1", error=RuntimeError("detector bug")))
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="detector bug"):
            await finisher.submit(_batch(log, "2"))
        await finisher.submit(_batch(log, "3"))  # the failure is raised once
        await asyncio.sleep(0.01)
        return log

    assert asyncio.run(scenario()) == ["1 started", "3 started", "3 finished"]


def test_a_failed_batch_is_reported_at_once_without_waiting_for_the_next_one() -> None:
    """No more data may come for hours: a batch's error must be seen when it happens, not at the next submit."""

    async def scenario() -> list[BaseException]:
        reported: list[BaseException] = []
        finisher, gate = BatchFinisher(on_error=reported.append), asyncio.Event()
        await finisher.submit(_batch([], "1"))
        await finisher.submit(_batch([], "2", error=RuntimeError("detector bug")))
        await asyncio.sleep(0.01)  # nothing else is submitted
        assert [str(error) for error in reported] == ["detector bug"]
        finisher.cancel()
        await finisher.submit(_batch([], "3", gate))
        finisher.cancel()  # shutting down: a cancelled batch is no failure
        await asyncio.sleep(0.01)
        return reported

    assert [str(error) for error in asyncio.run(scenario())] == ["detector bug"]


def test_cancel_leaves_the_batch_in_flight_unfinished() -> None:
    async def scenario() -> list[str]:
        finisher, log, gate = BatchFinisher(), [], asyncio.Event()
        await finisher.submit(_batch(log, "1", gate))
        await asyncio.sleep(0)
        finisher.cancel()
        gate.set()
        await asyncio.sleep(0.01)
        await finisher.submit(_batch(log, "2"))  # nothing in flight any more: starts at once
        await asyncio.sleep(0)
        return log

    assert asyncio.run(scenario()) == ["1 started", "2 started", "2 finished"]
