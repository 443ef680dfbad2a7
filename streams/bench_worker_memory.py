"""``riskwatch bench worker-memory``: a real worker's resident memory at N active segments.

``riskwatch bench state`` measures the detectors' state in its own process. A worker holds more:
Faust, aiokafka, its batches in flight. This runs ``riskwatch worker`` itself, writing to
``riskwatch store-server`` (ClickHouse out of its process, as in production), on a local tansu
broker, and publishes ``bench state``'s synthetic results of that many segments as result
envelopes on its results topic: every detector runs on them, as on any category's results. It
reads the worker's resident memory from /proc: when ready, at its peak, and at the end. Offered
at a rate the worker keeps up with (``rate``), the figure is the worker's steady state; offered
all at once, it includes a backlog's.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer

from streams.bench_pipeline import bench_worker_env, results_finished, until_results_finished
from streams.bench_state import synthetic_rounds
from streams.broker import LocalBroker, free_port
from streams.pipeline import RESULTS_PER_ENVELOPE, encode_results, partition_for
from streams.procfs import peak_rss_mb, rss_mb
from streams.store_server import StoreServerProcess
from streams.worker_process import WorkerProcess

TOPIC_PREFIX = "bench-memory"


@dataclass(frozen=True, slots=True)
class WorkerMemory:
    segments: int
    per_segment: int
    results: int
    seconds: float
    ready_mb: float  # before any result
    peak_mb: float
    end_mb: float  # once every result is stored
    dead_letters: int

    @property
    def results_per_second(self) -> float:
        return self.results / self.seconds


async def measure_worker(
    segments: int, per_segment: int, workdir: Path, rate: float | None = None, progress: Callable[[str], None] | None = None
) -> WorkerMemory:
    """Feed a worker ``per_segment`` results for each of ``segments``, at ``rate`` results/s (None: as fast as they are made)."""
    say = progress or (lambda _text: None)
    broker = LocalBroker("127.0.0.1", free_port(), log_file=workdir / "broker.log")
    await broker.start()
    store = StoreServerProcess(workdir / "store", "127.0.0.1", free_port(), workdir / "store.log")
    store.start()
    env = {**bench_worker_env(broker.bootstrap, TOPIC_PREFIX, workdir, "worker"), "RISKWATCH_CLICKHOUSE_URL": store.url}
    results_topic = env["RISKWATCH_RESULTS_TOPIC"]
    worker = WorkerProcess(env, workdir / "worker.log")
    worker.start()
    try:
        await worker.wait_ready(timeout=180)
        pid = worker.process.pid
        ready = rss_mb(pid)
        say(f"worker ready at {ready:,.0f} MB; publishing {segments:,} segments × {per_segment} results")
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=10, max_batch_size=1_048_576, max_request_size=4_194_304)
        await producer.start()
        try:
            partitions = len(await producer.partitions_for(results_topic))  # as the broker has them
            total, pending, started, shown = 0, [], time.perf_counter(), time.perf_counter()
            for round_, batch in synthetic_rounds(segments, per_segment):
                by_category: dict[str, list] = defaultdict(list)
                for result in batch:
                    by_category[result.category].append(result)
                for category, results in by_category.items():
                    key = category.encode()
                    for start in range(0, len(results), RESULTS_PER_ENVELOPE):
                        envelope = encode_results(results[start : start + RESULTS_PER_ENVELOPE])
                        pending.append(await producer.send(results_topic, key=key, value=envelope, partition=partition_for(key, partitions)))
                total += len(batch)
                if len(pending) >= 1000:
                    await asyncio.gather(*pending)
                    pending.clear()
                if rate:
                    await asyncio.sleep(max(0.0, started + total / rate - time.perf_counter()))
                if time.perf_counter() - shown > 20:
                    shown = time.perf_counter()
                    done = results_finished(await asyncio.to_thread(worker.metrics))
                    say(f"round {round_ + 1} of {per_segment}: {total:,} published, {done:,.0f} done, RSS {rss_mb(pid):,.0f} MB, peak {peak_rss_mb(pid):,.0f}")
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

        def show_progress(metrics: dict[str, float]) -> None:
            nonlocal shown
            if time.perf_counter() - shown > 20:
                shown = time.perf_counter()
                say(f"{results_finished(metrics):,.0f} of {total:,} done, RSS {rss_mb(pid):,.0f} MB, peak {peak_rss_mb(pid):,.0f}")

        metrics = await until_results_finished(worker, total, poll_seconds=0.5, on_poll=show_progress)
        seconds = time.perf_counter() - started
        return WorkerMemory(
            segments, per_segment, total, seconds, ready, peak_rss_mb(pid), rss_mb(pid), int(metrics.get("riskwatch_dead_letters_total", 0))
        )
    finally:
        worker.stop()
        store.stop()
        broker.stop()
