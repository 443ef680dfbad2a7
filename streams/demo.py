"""``riskwatch demo``: the whole pipeline on one machine, on the embedded defaults.

Starts the local broker and a worker (as a child process, exactly as production runs it),
publishes simulated reports with scripted incidents, a few malformed messages and a few
republished reports, prints alerts as they land on the alerts topic, and ends with a
summary read back from ClickHouse.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table

from schemas.catalogue import category_name, city_name
from streams.broker import LocalBroker, free_port, port_is_free
from streams.clickhouse import connect
from streams.publishing import MessageMaker, PublishStats, publish
from streams.settings import Settings
from streams.simulation import DEFAULT_INCIDENTS, Simulator
from streams.worker_process import WorkerProcess

_SEVERITY_STYLE = {"serious": "bold red", "potentially_serious": "yellow", "not_serious": "cyan"}


async def _print_alerts(settings: Settings, console: Console, stop: asyncio.Event, seen: set[str]) -> None:
    consumer = AIOKafkaConsumer(
        settings.alerts_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,  # as the worker's: alerts show as they land
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                for record in records:
                    alert = orjson.loads(record.value)
                    if alert["alert_id"] in seen:  # at-least-once transport: same id, same alert
                        continue
                    seen.add(alert["alert_id"])
                    style = _SEVERITY_STYLE.get(alert["severity"], "")
                    console.print(
                        f"[{style}]{alert['severity'].replace('_', ' '):>19}[/] {alert['score']:5.2f}× "
                        f"{alert['title_zh']} [dim]· {alert['title']} · {alert['manufacturer']['name'] if alert['manufacturer'] else ''}[/]",
                        highlight=False,
                        overflow="ellipsis",
                        no_wrap=True,
                    )
    finally:
        await consumer.stop()


def _demo_settings(settings: Settings) -> Settings:
    """The demo's own data dir (wiped each run) and free ports if the defaults are taken."""
    data_dir = settings.data_dir / "demo"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    host, port = settings.bootstrap_host_port
    if not port_is_free(host, port):
        port = free_port(host)
    web_port = settings.web_port if port_is_free(settings.web_host, settings.web_port) else free_port(settings.web_host)
    return settings.model_copy(update={"data_dir": data_dir, "kafka_bootstrap": f"{host}:{port}", "web_port": web_port, "clickhouse_url": ""})


def _worker_env(settings: Settings) -> dict[str, str]:
    return {
        "RISKWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "RISKWATCH_DATA_DIR": str(settings.data_dir),
        "RISKWATCH_WEB_HOST": settings.web_host,
        "RISKWATCH_WEB_PORT": str(settings.web_port),
        "RISKWATCH_CLICKHOUSE_URL": settings.effective_clickhouse_url,
    }


async def run_demo(base: Settings, *, duration: float | None, rate: float, seed: int, console: Console) -> int:
    settings = _demo_settings(base)
    host, port = settings.bootstrap_host_port
    broker = LocalBroker(host, port, settings.broker_binary, log_file=settings.data_dir / "broker.log")
    worker = WorkerProcess(_worker_env(settings), settings.data_dir / "worker.log")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    seen_alerts: set[str] = set()
    stats = PublishStats()
    started = time.monotonic()
    try:
        with console.status("starting the local broker (tansu)…"):
            await broker.start()
        console.print(f"[green]✓[/] broker at {broker.bootstrap}")
        worker.start()
        with console.status("starting a worker and waiting for its partitions…"):
            await worker.wait_ready()
        console.print(f"[green]✓[/] worker ready (metrics: {worker.metrics_url}, log: {worker.log_file})")
        simulator = Simulator(seed=seed, incidents=DEFAULT_INCIDENTS)
        maker = MessageMaker(simulator, bad_fraction=0.02, duplicate_fraction=0.03, seed=seed)
        for incident in DEFAULT_INCIDENTS:
            console.print(f"  [dim]scripted incident from report {incident.start}:[/] {incident.description}")
        console.print(
            f"publishing simulated reports at {rate:g}/s "
            f"{'for ' + format(duration, 'g') + ' s' if duration else 'until Ctrl-C'}; alerts as they land:\n"
        )
        printer = asyncio.create_task(_print_alerts(settings, console, stop, seen_alerts))
        stats = await publish(settings.kafka_bootstrap, settings.reports_topic, maker, rate=rate, duration=duration, stop=stop)
        with console.status(f"sent {stats.sent} messages; waiting for the worker to store everything…"):
            final_metrics = await worker.wait_drained(stats.sent)
            await asyncio.sleep(1.0)  # let the last alerts reach the printer
        stop.set()
        await printer
    finally:
        stop.set()
        exit_code = worker.stop()
        broker.stop()
    if exit_code not in (0, None):
        console.print(f"[red]worker exited with code {exit_code}; see {worker.log_file}[/]")
        return 1
    _summary(settings, console, stats, final_metrics, time.monotonic() - started, len(seen_alerts))
    return 0


def _summary(settings: Settings, console: Console, stats: PublishStats, metrics: dict[str, float], elapsed: float, printed: int) -> None:
    client = connect(settings)
    q = client.query
    results, reports, failing = q("SELECT count(), uniqExact(report_id, lab_id), countIf(verdict = 'fail') FROM results FINAL").result_rows[0]
    period = q("SELECT min(sampled_at), max(sampled_at) FROM results FINAL").result_rows[0]
    console.rule("[bold]summary, read back from ClickHouse")
    console.print(
        f"published {stats.sent} messages in {elapsed:.0f} s: {stats.reports} reports ({stats.republished} republished), "
        f"{stats.bad_reports} malformed, {stats.bad_items} with a malformed item\n"
        f"stored [bold]{results}[/] results from {reports} reports (sampled {period[0]:%Y-%m-%d} … {period[1]:%Y-%m-%d}), "
        f"{failing} failing; {int(metrics.get('riskwatch_results_duplicate_total', 0))} duplicate results skipped; "
        f"{int(metrics.get('riskwatch_dead_letters_total', 0))} dead letters on {settings.dead_letter_topic}"
    )
    by_severity = q("SELECT severity, count() FROM alerts FINAL GROUP BY severity ORDER BY severity DESC").result_rows
    _table(console, "alerts by severity", ("severity", "alerts"), [(str(s).replace("_", " "), n) for s, n in by_severity])
    by_city = q("SELECT arrayJoin(cities) AS city, count() AS n FROM alerts FINAL GROUP BY city ORDER BY n DESC").result_rows
    _table(console, "alerts by city", ("city", "alerts"), [(f"{city_name(c, 'zh')} {city_name(c)}", n) for c, n in by_city])
    by_category = q("SELECT category, count() AS n FROM alerts FINAL GROUP BY category ORDER BY n DESC LIMIT 10").result_rows
    _table(console, "alerts by category (top 10)", ("category", "alerts"), [(f"{category_name(c, 'zh')}", n) for c, n in by_category])
    bulletin_path = _write_bulletin(client, settings)
    client.close()
    store = settings.data_dir
    console.print(
        f"\n{printed} alerts printed live. Query the stored data (worker stopped, so the store is free):\n"
        f'  riskwatch sql --data-dir {store} "SELECT severity, title_zh, score FROM alerts FINAL ORDER BY score DESC LIMIT 10"\n'
        f'  riskwatch sql --data-dir {store} "SELECT city, countIf(verdict = \'fail\') / count() AS failure_rate FROM results FINAL GROUP BY city"\n'
        f"  riskwatch alerts list --data-dir {store}\n"
        f"\nRisk bulletin for the simulated period (open it in a browser): [bold]{bulletin_path}[/]"
    )


def _write_bulletin(client, settings: Settings) -> Path:
    from streams.bulletin import BulletinBuilder, default_period, write

    start, end = default_period(client)
    return write(BulletinBuilder(client, start, end, lang="zh").build(), settings.data_dir / f"bulletin-{start}-{end}.html").resolve()


def _table(console: Console, title: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    table = Table(*columns, title=title, title_justify="left")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    console.print(table)

