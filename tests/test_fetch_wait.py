"""The worker's Kafka consumer waits for data as long as the settings say (Faust alone fixes 1.5 s)."""

import asyncio

from streams.app import create_app
from streams.settings import Settings


def test_the_workers_consumer_fetches_with_the_configured_wait(broker, tmp_path):
    async def fetcher_wait() -> int:
        app = create_app(Settings(kafka_bootstrap=broker.bootstrap, data_dir=tmp_path, fetch_max_wait_ms=77))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # the consumer Faust's worker starts
        await consumer.start()
        try:
            return consumer._fetcher._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(fetcher_wait()) == 77
