"""The ``riskwatch`` command: broker, worker, simulate, demo, sql."""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from streams.settings import Settings, load_settings

if TYPE_CHECKING:
    from concurrent.futures import Executor

console = Console()


def _settings(data_dir: str | None = None) -> Settings:
    return load_settings(**({"data_dir": Path(data_dir)} if data_dir else {}))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """riskwatch: early warnings from the alliance labs' results.

    Settings come from RISKWATCH_* environment variables (see README, "Settings").
    """


@main.command()
def worker() -> None:
    """Run a stream worker (Faust): ingest, detect, store in ClickHouse."""
    import faust

    from streams.app import create_app

    settings = _settings()
    app = create_app(settings)
    faust.Worker(app, loglevel=settings.log_level, redirect_stdouts=False).execute_from_commandline()


@main.command()
@click.option("--port", type=int, default=None, help="Port (default: the one in RISKWATCH_KAFKA_BOOTSTRAP)")
def broker(port: int | None) -> None:
    """Run the local Kafka-protocol broker (tansu) until Ctrl-C; storage from RISKWATCH_BROKER_STORAGE."""
    from streams.broker import LocalBroker

    settings = _settings()
    host, default_port = settings.bootstrap_host_port

    async def run() -> None:
        local = LocalBroker(host, port or default_port, settings.broker_binary, storage=settings.broker_storage)
        await local.start()
        console.print(f"[green]tansu broker ready[/] at [bold]{local.bootstrap}[/] (storage {settings.broker_storage}; Ctrl-C stops it)")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        local.stop()
        console.print("broker stopped")

    asyncio.run(run())


@main.command()
@click.option("--rate", type=float, default=20.0, show_default=True, help="Reports per second")
@click.option("--count", type=int, default=None, help="Stop after this many messages")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--incidents/--no-incidents", default=True, show_default=True, help="Script the default incidents")
@click.option("--bad-fraction", type=float, default=0.0, show_default=True, help="Share of malformed messages")
@click.option("--duplicate-fraction", type=float, default=0.0, show_default=True, help="Share of republished reports")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write --count reports as JSON Lines here instead"
)
def simulate(
    rate: float, count: int | None, duration: float | None, seed: int, incidents: bool, bad_fraction: float, duplicate_fraction: float,
    out: Path | None,
) -> None:  # fmt: skip
    """Publish synthetic lab reports from the seven cities to the reports topic (or write them to a file)."""

    from streams.publishing import MessageMaker, PublishStats, publish
    from streams.simulation import DEFAULT_INCIDENTS, Simulator

    settings = _settings()
    simulator = Simulator(seed=seed, incidents=DEFAULT_INCIDENTS if incidents else ())
    maker = MessageMaker(simulator, bad_fraction, duplicate_fraction, seed)
    if out is not None:
        if count is None:
            raise click.UsageError("--out needs --count")
        stats = PublishStats()
        with out.open("wb") as handle:
            for _ in range(count):
                handle.write(maker.next(stats)[1] + b"\n")
        console.print(f"wrote {count} reports to {out} ({stats.bad_reports} malformed, {stats.republished} republished)")
        return
    if count is None and duration is None:
        console.print("publishing until Ctrl-C")

    def progress(stats) -> None:
        console.print(f"\rsent {stats.sent} messages ({stats.rate:.0f}/s)", end="", highlight=False)

    async def run():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        return await publish(
            settings.kafka_bootstrap,
            settings.reports_topic,
            maker,
            rate=rate,
            count=count,
            duration=duration,
            stop=stop,
            on_progress=progress,
            security=settings.kafka_client_options(),
        )

    stats = asyncio.run(run())
    console.print(
        f"\nsent {stats.sent} messages: {stats.reports} reports ({stats.republished} republished), "
        f"{stats.bad_reports} malformed reports, {stats.bad_items} reports with a malformed item"
    )


@main.command()
@click.option("--duration", type=float, default=None, help="Seconds to simulate (default: until Ctrl-C)")
@click.option("--rate", type=float, default=40.0, show_default=True, help="Reports per second")
@click.option("--seed", type=int, default=7, show_default=True)
def demo(duration: float | None, rate: float, seed: int) -> None:
    """Local broker + worker + simulator; prints alerts as they land, then a summary from ClickHouse."""
    from streams.demo import run_demo

    sys.exit(asyncio.run(run_demo(_settings(), duration=duration, rate=rate, seed=seed, console=console)))


@main.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None, help="The lab's column mapping (TOML)"
)
@click.option(
    "--watch", "folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None, help="Publish files dropped here"
)
@click.option("--interval", type=float, default=5.0, show_default=True, help="Seconds between looks at the --watch folder")
@click.option("--dry-run", is_flag=True, help="Check the files against the contract; send nothing")
@click.option("--rejected-csv", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write rejected lines and reasons here")
@click.option(
    "--batch", type=click.IntRange(1, 10_000), default=200, show_default=True, help="Reports per Kafka message (1: one report each)"
)
def publish(
    files: tuple[Path, ...],
    mapping: Path | None,
    folder: Path | None,
    interval: float,
    dry_run: bool,
    rejected_csv: Path | None,
    batch: int,
) -> None:
    """Publish LIMS exports (CSV, XLSX, JSON Lines) to the reports topic, validated first."""
    from streams.lims import LimsMapping, MappingError
    from streams.publisher import Batching, make_producer, prepare, publish_file, watch

    if not files and folder is None:
        raise click.UsageError("name files to publish, or a folder with --watch")
    settings = _settings()
    try:
        lab_mapping = LimsMapping.load(mapping) if mapping else None
    except MappingError as error:
        raise click.UsageError(str(error)) from None
    summaries = []
    batching = Batching(batch, settings.max_message_bytes)
    producer = None if dry_run else make_producer(settings.kafka_bootstrap, settings.max_message_bytes, settings.kafka_client_options())
    try:
        if folder is not None:
            if producer is None:
                raise click.UsageError("--watch and --dry-run do not go together")
            console.print(f"watching {folder} (every {interval:g} s; Ctrl-C stops)")
            watch(folder, lab_mapping, producer, settings.reports_topic, interval, _print_summary, stop=lambda: False, batching=batching)
        for file in files:
            if producer is None:
                summary = prepare(file, lab_mapping, settings.validation_policy).summary
            else:
                with _progress() as progress:
                    task = progress.add_task(f"publishing {file.name}", total=None)
                    advance = functools.partial(_advance, progress, task)
                    summary = publish_file(file, lab_mapping, producer, settings.reports_topic, advance, batching)
            _print_summary(summary, dry_run)
            summaries.append(summary)
    except KeyboardInterrupt:
        pass
    finally:
        if producer is not None:
            producer.close()
    if rejected_csv is not None:
        with rejected_csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "line", "reason"])
            writer.writerows([s.file, r.line, r.reason] for s in summaries for r in s.rejected)
    if any(s.error for s in summaries):
        sys.exit(1)


def _advance(progress, task, done: int, total: int) -> None:
    progress.update(task, completed=done, total=total)


def _print_summary(summary, dry_run: bool = False) -> None:
    if summary.error:
        console.print(f"[red]{summary.file}: {summary.error}[/]")
        return
    if summary.already_published_as:
        console.print(f"{summary.file}: already published (as {summary.already_published_as}); nothing sent")
        return
    reports = summary.reports_ready if dry_run else summary.reports_sent
    sent = f"{'would send' if dry_run else 'sent'} {reports} reports ({summary.items_sent} test items)"
    if not dry_run and summary.messages_sent != summary.reports_sent:
        sent += f" in {summary.messages_sent} messages"
    console.print(f"{summary.file}: {summary.rows} rows → {sent}; {len(summary.rejected)} lines rejected", highlight=False)
    if summary.rejected:
        table = Table("line", "reason", title="rejected (not sent)", title_justify="left")
        for rejected in summary.rejected[:50]:
            table.add_row(str(rejected.line), rejected.reason)
        console.print(table)
        if len(summary.rejected) > 50:
            console.print(f"… and {len(summary.rejected) - 50} more (--rejected-csv FILE lists them all)")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write alerts as JSON Lines here")
@click.option("--clickhouse", "to_clickhouse", is_flag=True, help="Write alerts to the configured ClickHouse alerts table")
@click.option(
    "--processes", type=click.IntRange(min=0), default=None, help="Processes to share the categories among (0: one a core, at most 8); default RISKWATCH_BACKTEST_PROCESSES"
)
def backtest(file: Path, out: Path | None, to_clickhouse: bool, processes: int | None) -> None:
    """Run the detectors over a historical file (lab reports .jsonl, or results .csv); no Kafka."""
    from detectors.suite import default_detectors
    from streams.backtest import backtest as run_backtest
    from streams.backtest import write_jsonl

    if out is None and not to_clickhouse:
        raise click.UsageError("say where the alerts go: --out FILE and/or --clickhouse")
    settings = _settings()
    processes = settings.backtest_processes if processes is None else processes
    processes = processes or min(os.cpu_count() or 1, 8)  # each holds its own imports and state; the largest category bounds the sharing
    # One process fits models beside the detectors, as the worker does; several fit their own in place.
    pool = _fit_pool(settings) if processes == 1 else nullcontext()
    with pool as fits, _progress() as progress:
        detectors = functools.partial(default_detectors, settings.severity_policy, fits)
        task = progress.add_task(f"backtesting {file.name}" + (f" in {processes} processes" if processes > 1 else ""), total=None)
        outcome = run_backtest(file, detectors, progress=lambda done, total: progress.update(task, completed=done, total=total), processes=processes)
    if out is not None:
        write_jsonl(outcome.alerts, out)
    if to_clickhouse:
        from streams.clickhouse import Store, connect, ensure_schema

        client = connect(settings)
        ensure_schema(client)
        Store(client).insert_alerts(outcome.alerts)
        client.close()
    rejected = sum(outcome.rejected.values())
    console.print(
        f"{outcome.results:,} results ({rejected} rejected: {dict(outcome.rejected) or 'none'}) → {len(outcome.alerts):,} alerts "
        f"in {outcome.seconds:.1f} s ({outcome.results_per_second:,.0f} results/s" + (f", {processes} processes)" if processes > 1 else ")")
        + (f"; written to {out}" if out else "")
    )
    table = Table("detector", "serious", "potentially serious", "not serious", title="alerts that would have fired", title_justify="left")
    counts: dict[str, dict[str, int]] = {}
    for alert in outcome.alerts:
        counts.setdefault(alert.detector, {}).setdefault(alert.severity.value, 0)
        counts[alert.detector][alert.severity.value] += 1
    for detector, by_severity in sorted(counts.items()):
        table.add_row(detector, *(str(by_severity.get(s, 0)) for s in ("serious", "potentially_serious", "not_serious")))
    console.print(table)


@main.group()
def alerts() -> None:
    """The alert lifecycle: list, show, ack, resolve, false-alarm, precision."""


def _store_client(data_dir: str | None = None):
    from streams.clickhouse import connect, ensure_schema

    client = connect(_settings(data_dir))
    ensure_schema(client)
    return client


_data_dir_option = click.option("--data-dir", default=None, help="Data directory of the embedded store (e.g. .riskwatch/demo)")


@alerts.command("list")
@click.option("--status", type=click.Choice(["open", "acknowledged", "resolved", "false_alarm"]), default=None)
@click.option("--severity", type=click.Choice(["serious", "potentially_serious", "not_serious"]), default=None)
@click.option("--detector", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@_data_dir_option
def alerts_list(status, severity, detector, limit, data_dir) -> None:
    """Alerts, most severe and most recent first."""
    from streams.lifecycle import list_alerts

    client = _store_client(data_dir)
    result = list_alerts(client, status=status, severity=severity, detector=detector, limit=limit)
    table = Table("id", "status", "severity", "detector", "alert", "×", "cities", "last seen")
    for id_, st, sev, det, title_zh, _title, count, cities, last_seen in result.result_rows:
        table.add_row(id_[:8], st, str(sev).replace("_", " "), det, title_zh, str(count), ",".join(cities), f"{last_seen:%Y-%m-%d}")
    console.print(table)
    client.close()


@alerts.command("show")
@click.argument("alert_id")
@_data_dir_option
def alerts_show(alert_id: str, data_dir) -> None:
    """One alert in full: explanation, evidence, status history."""
    from streams.lifecycle import AlertNotFound, show_alert

    client = _store_client(data_dir)
    try:
        alert, history = show_alert(client, alert_id)
    except AlertNotFound as error:
        raise click.ClickException(str(error)) from None
    finally:
        client.close()
    console.print(f"[bold]{alert['title_zh']}[/]  {alert['title']}")
    console.print(f"id {alert['alert_id']} · {alert['detector']} · {str(alert['severity']).replace('_', ' ')} · status {alert['status']}")
    console.print(f"{alert['explanation']}\n{alert['explanation_zh']}")
    console.print(f"fired {alert['count']}× between {alert['first_seen']:%Y-%m-%d %H:%M} and {alert['last_seen']:%Y-%m-%d %H:%M} UTC; "
                  f"cities {', '.join(alert['cities'])}; labs {', '.join(alert['labs'])}")  # fmt: skip
    console.print(
        f"evidence ({len(alert['evidence'])} results): {', '.join(str(e) for e in alert['evidence'][:10])}{' …' if len(alert['evidence']) > 10 else ''}"
    )
    for changed_at, status, by, note in history:
        console.print(f"  {changed_at:%Y-%m-%d %H:%M} {status} by {by}{': ' + note if note else ''}")


def _status_command(name: str, status: str, help_text: str):
    @alerts.command(name, help=help_text)
    @click.argument("alert_id")
    @click.option("--by", default=lambda: os.environ.get("USER", "officer"), show_default="$USER", help="Who")
    @click.option("--note", default="", help="Why")
    @_data_dir_option
    def command(alert_id: str, by: str, note: str, data_dir) -> None:
        from streams.lifecycle import AlertNotFound, set_status

        client = _store_client(data_dir)
        try:
            full = set_status(client, alert_id, status, by, note)
        except AlertNotFound as error:
            raise click.ClickException(str(error)) from None
        finally:
            client.close()
        console.print(f"alert {full}: {status.replace('_', ' ')} (by {by})")

    return command


_status_command("ack", "acknowledged", "Acknowledge an alert: someone is on it.")
_status_command("resolve", "resolved", "Resolve an alert: it was real and has been dealt with.")
_status_command("false-alarm", "false_alarm", "Mark an alert a false alarm (counts against its detector's precision).")
_status_command("reopen", "open", "Reopen an alert.")


@alerts.command("precision")
@_data_dir_option
def alerts_precision(data_dir) -> None:
    """Each detector's precision from officers' feedback (resolved = real, false alarm = not)."""
    from streams.lifecycle import precision_by_detector

    client = _store_client(data_dir)
    rows = precision_by_detector(client)
    client.close()
    table = Table("detector", "alerts", "judged", "real (resolved)", "false alarms", "precision")
    for row in rows:
        table.add_row(row.detector, str(row.alerts), str(row.judged), str(row.confirmed), str(row.false_alarms),
                      "–" if row.precision is None else f"{row.precision:.2f}")  # fmt: skip
    console.print(table)


@main.group()
def bench() -> None:
    """Benchmarks that print figures."""


@bench.command("detect")
@click.option(
    "--seed",
    "seeds",
    type=int,
    multiple=True,
    default=(2026,),
    show_default=True,
    help="Scenario seed; repeat it to run several and pool them (e.g. --seed 2026 --seed 7 --seed 1)",
)
@click.option("--per-kind", type=int, default=5, show_default=True, help="Incidents of each kind")
@click.option("--clean-reports", type=int, default=30000, show_default=True, help="Reports in the clean stream")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON")
def bench_detect(seeds: tuple[int, ...], per_kind: int, clean_reports: int, as_json: bool) -> None:
    """Recall, precision, false alerts and delay of every detector on labelled scenarios."""
    from streams.bench_detect import BenchConfig, evaluate, pooled
    from streams.bench_report import print_report, print_seeds, report_json

    seeds = tuple(dict.fromkeys(seeds))  # each once
    configs = {seed: BenchConfig(seed=seed, per_kind=per_kind, clean_reports=clean_reports) for seed in seeds}
    reports = {}
    with _progress() as progress:
        task = progress.add_task("starting", total=None)
        for seed, config in configs.items():

            def update(stage: str, done: int, total: int, seed: int = seed) -> None:
                label = f"seed {seed} ({len(reports) + 1} of {len(configs)}): {stage}" if len(configs) > 1 else stage
                progress.update(task, description=label, completed=done, total=total)

            reports[seed] = evaluate(config, update)
    config = configs[seeds[0]]
    report = reports[seeds[0]] if len(seeds) == 1 else pooled(list(reports.values()))
    if as_json:
        click.echo(report_json(report, config, reports if len(seeds) > 1 else None))
        return
    wide = Console(width=max(console.width, 190))  # wide even when piped
    if len(seeds) > 1:
        print_seeds(reports, wide)
    print_report(report, config, wide, seeds)


@bench.command("pipeline")
@click.option("--reports", type=int, default=20_000, show_default=True, help="Report messages in the throughput runs")
@click.option("--partitions", type=int, default=8, show_default=True)
@click.option(
    "--rate", type=float, default=2000.0, show_default=True, help="Offered reports/s for the latency run (issue 8's target: 2,000)"
)
def bench_pipeline(reports: int, partitions: int, rate: float) -> None:
    """Throughput of bare aiokafka, a no-op Faust agent and the full worker; latency at a fixed rate."""
    from streams.bench_pipeline import run

    figures = asyncio.run(run(reports, partitions, rate, progress=lambda text: console.print(f"[dim]{text}[/]")))
    table = Table("run", "reports", "results", "seconds", "reports/s", "results/s", "notes", title=f"pipeline on local tansu, {partitions} partitions",
                  title_justify="left")  # fmt: skip
    for f in figures:
        notes = ", ".join(f"{k} {v:.3g}" for k, v in f.extra.items())
        rates = ("–", "–") if not f.seconds else (f"{f.messages_per_second:,.0f}", f"{f.results_per_second:,.0f}")
        table.add_row(f.name, f"{f.messages:,}", f"{f.results:,}", f"{f.seconds:.2f}" if f.seconds else "–", *rates, notes)
    Console(width=max(console.width, 150)).print(table)  # wide even when piped: the figures must stay readable
    bare, _, full, _, bare_batches, on_batches, _, validation, detectors, sink = figures
    console.print(
        f"full worker / bare consumer, one report per message: {full.messages_per_second / bare.messages_per_second:.3f} (target ≥ 0.5)"
    )
    console.print(f"full worker / bare consumer, batch messages: {on_batches.messages_per_second / bare_batches.messages_per_second:.3f}")
    added = validation.messages / (validation.seconds + detectors.seconds + sink.seconds)
    console.print(
        f"the worker's stages alone, reports/s: validation {validation.messages_per_second:,.0f}, detectors "
        f"{detectors.messages_per_second:,.0f}, ClickHouse {sink.messages_per_second:,.0f}; their times added up: {added:,.0f} "
        f"(target for the whole worker: 60,000; full worker on batch messages: {on_batches.messages_per_second:,.0f})"
    )


@bench.command("state")
@click.option("--segments", type=int, default=20_000, show_default=True, help="Active segments (category × test item × city)")
@click.option("--per-segment", type=int, default=30, show_default=True, help="Results fed to each segment")
@click.option("--worker-imports", is_flag=True, help="Import the worker's modules (streams.app) first, so that RSS counts them as a worker's does")
def bench_state(segments: int, per_segment: int, worker_imports: bool) -> None:
    """Resident memory of the detector suite per active segment, and each detector's state."""
    from streams.bench_state import measure
    from streams.heap import HeapTrimmer

    if worker_imports:
        import streams.app  # noqa: F401 - loaded for its resident memory alone

    settings = _settings()
    heap = HeapTrimmer(settings.heap_trim_seconds)  # as in the worker, after a batch
    with _fit_pool(settings) as fits, _progress() as progress:  # as in the worker: model fits in their own process
        task = progress.add_task(f"feeding {segments:,} segments", total=per_segment)
        figures = measure(segments, per_segment, lambda done, total: progress.update(task, completed=done), fits, heap)
    table = Table("detector", "state, pickled", "per segment", title=f"detector state: {segments:,} segments × {per_segment} results",
                  title_justify="left")  # fmt: skip
    for name, size in sorted(figures.pickled_bytes.items(), key=lambda item: -item[1]):
        table.add_row(name, f"{size / 1e6:,.1f} MB", f"{size / segments:,.0f} B")
    console.print(table)
    growth = figures.rss_after_mb - figures.rss_before_mb
    at_target = figures.rss_before_mb + figures.rss_bytes_per_segment * 100_000 / 2**20
    console.print(
        f"RSS {figures.rss_before_mb:,.0f} MB before, {figures.rss_after_mb:,.0f} MB after: {growth:,.0f} MB for {segments:,} segments, "
        f"{figures.rss_bytes_per_segment:,.0f} B per segment, i.e. {at_target:,.0f} MB with 100,000 "
        f"(target: RSS ≤ 500 MB with 100,000). {figures.results:,} results in {figures.seconds:.0f} s ({figures.results / figures.seconds:,.0f}/s)."
    )
    trims = f"at most every {settings.heap_trim_seconds:g} s" if heap.interval else "never"
    console.print(f"Freed heap memory was returned to the system {trims} after a batch (RISKWATCH_HEAP_TRIM_SECONDS).")
    if settings.fit_processes:
        console.print(
            f"The fit process ({settings.fit_processes}): {figures.fit_processes_rss_mb:,.0f} MB resident (scikit-learn and one fit's data)."
        )


@contextmanager
def _fit_pool(settings: Settings) -> Iterator[Executor | None]:
    """The worker's fit processes (None: fit in place) for a command's lifetime, shut on the way out."""
    fits = settings.fit_executor()
    try:
        yield fits
    finally:
        if fits is not None:
            fits.shutdown(cancel_futures=True)


@bench.command("worker-memory")
@click.option("--segments", type=int, default=100_000, show_default=True, help="Active segments (category × test item × city)")
@click.option("--per-segment", type=int, default=30, show_default=True, help="Results published for each segment")
@click.option("--rate", type=float, default=None, help="Results/s offered (default: as fast as they are made, a backlog)")
def bench_worker_memory(segments: int, per_segment: int, rate: float | None) -> None:
    """Resident memory of a real worker (writing to a store server) fed results of that many segments."""
    import tempfile

    from streams.bench_worker_memory import measure_worker

    with tempfile.TemporaryDirectory(prefix="riskwatch-bench-") as workdir:
        figures = asyncio.run(measure_worker(segments, per_segment, Path(workdir), rate, progress=lambda text: console.print(f"[dim]{text}[/]")))
    offered = f"offered at {rate:,.0f} results/s" if rate else "offered all at once"
    console.print(
        f"worker at {figures.segments:,} segments × {figures.per_segment} results ({offered}): {figures.results:,} results in "
        f"{figures.seconds:.0f} s ({figures.results_per_second:,.0f}/s); RSS {figures.ready_mb:,.0f} MB when ready, "
        f"peak {figures.peak_mb:,.0f} MB, {figures.end_mb:,.0f} MB at the end (target: ≤ 500 MB with 100,000); "
        f"dead letters {figures.dead_letters}"
    )


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True
    )


@main.command()
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), default=None, help="First day (default: first stored sample)")
@click.option(
    "--to", "end", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Day after the last (default: after the last stored sample)"
)
@click.option("--city", "cities", multiple=True, help="Only these cities (repeat the option)")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="HTML file (default: bulletin-FROM-TO-LANG.html)"
)
@click.option("--pdf", is_flag=True, help="Also print a PDF beside it (needs Debian's chromium)")
@_data_dir_option
def bulletin(start, end, cities, lang, output, pdf, data_dir) -> None:
    """Write the risk bulletin for a period: one self-contained HTML file (and a PDF)."""
    from streams.bulletin import BulletinBuilder, default_period, to_pdf, write

    client = _store_client(data_dir)
    try:
        first, last = default_period(client)
        period_start, period_end = (start.date() if start else first), (end.date() if end else last)
        try:
            built = BulletinBuilder(client, period_start, period_end, list(cities), lang).build()
        except ValueError as error:
            raise click.UsageError(str(error)) from None
    finally:
        client.close()
    path = write(built, output or Path(f"bulletin-{period_start}-{period_end}-{lang}.html"))
    console.print(f"bulletin written to {path} ({built.headline.results:,} results, {sum(built.alert_counts.values())} alerts)")
    if pdf:
        try:
            console.print(f"PDF: {to_pdf(path)}")
        except RuntimeError as error:
            raise click.ClickException(str(error)) from None


@main.command()
def schema() -> None:
    """Create the riskwatch database, tables and views (idempotent; workers also do it on start)."""
    from streams.clickhouse import connect, ddl_statements, ensure_schema

    settings = _settings()
    client = connect(settings)
    ensure_schema(client)
    client.close()
    console.print(f"schema ready: {len(ddl_statements())} statements applied to {settings.clickhouse_database}")


@main.command("settings")
@click.option("--markdown", is_flag=True, help="Print the README's settings table")
def show_settings(markdown: bool) -> None:
    """Every RISKWATCH_* setting with its default (and current value)."""
    from streams.settings import settings_table

    if markdown:
        click.echo(settings_table())
        return
    current = _settings()
    table = Table("variable", "value", "meaning")
    for name, field in Settings.model_fields.items():
        value = getattr(current, name)
        table.add_row(f"RISKWATCH_{name.upper()}", "***" if "password" in name else str(value), field.description or "")
    console.print(table)


@main.command("store-server")
@click.option("--listen", default=None, help="host:port (default: RISKWATCH_STORE_SERVER_LISTEN)")
@click.option("--data-dir", default=None, help="Data directory whose embedded store to serve")
def store_server(listen: str | None, data_dir: str | None) -> None:
    """Serve the embedded store over ClickHouse's HTTP interface, so several local processes share it.

    Point workers, `riskwatch sql` and `riskwatch alerts` at it with RISKWATCH_CLICKHOUSE_URL=http://HOST:PORT.
    """
    from urllib.parse import urlparse

    from streams.store_server import serve

    settings = _settings(data_dir)
    if not settings.embedded_clickhouse:
        raise click.UsageError("RISKWATCH_CLICKHOUSE_URL names a server already; the store server serves the embedded store")
    address = urlparse(f"http://{listen or settings.store_server_listen}")
    folder = Path(settings.effective_clickhouse_url.removeprefix("chdb://"))
    console.print(f"[green]store server[/] for [bold]{folder}[/] on http://{address.hostname}:{address.port} (Ctrl-C stops it)")
    serve(folder, address.hostname or "127.0.0.1", address.port or 8123)


@main.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--data-dir", default=None, help="Data directory of the embedded store (e.g. .riskwatch/demo)")
def sql(query: str, fmt: str, data_dir: str | None) -> None:
    """Run a SQL query on the riskwatch database and print the result.

    With the embedded store, stop the worker first: chDB lets one process open a directory.
    """
    from streams.clickhouse import connect

    result = connect(_settings(data_dir)).query(query)
    names, rows = list(result.column_names), result.result_rows
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows(rows)
    elif fmt == "json":
        click.echo(json.dumps([dict(zip(names, row, strict=True)) for row in rows], ensure_ascii=False, default=str, indent=2))
    else:
        table = Table(*names, show_lines=False)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        console.print(table)
        console.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}")


if __name__ == "__main__":
    main()
