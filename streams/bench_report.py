"""Print the detector benchmark as a table (or JSON), with the targets beside the figures."""

from __future__ import annotations

import dataclasses
import json

from rich.console import Console
from rich.table import Table

from streams.bench_detect import BenchConfig, BenchReport, DetectorScore, median

TARGETS = {"recall": 0.95, "false_per_10k": 1.0, "median_delay_results": 3}


def _row(score: DetectorScore, clean_results: int) -> dict:
    return {
        "detector": score.detector,
        "incidents": score.incidents,
        "detected": score.detected,
        "recall": score.recall,
        "alerts": score.alerts,
        "precision": score.precision,
        "false_per_10k_clean": 10_000 * score.clean_alerts / clean_results,
        "risky_maker_alerts": score.risky_maker_alerts,
        "median_delay_results": median(score.delays_results),
        "median_delay_hours": median(score.delays_hours),
        "first_warned": score.first_warning.warned,
        "first_warning_median_delay_results": median(score.first_warning.delays_results),
        "first_pattern_warned": score.first_pattern_warning.warned,
        "first_pattern_warning_median_delay_results": median(score.first_pattern_warning.delays_results),
    }


def rows(report: BenchReport) -> list[dict]:
    return [_row(s, report.clean_results) for s in report.scores.values()] + [_row(report.overall, report.clean_results)]


def report_json(report: BenchReport, config: BenchConfig) -> str:
    return json.dumps(
        {"config": dataclasses.asdict(config), "incident_results": report.incident_results, "clean_results": report.clean_results,
         "results_per_second": report.results_per_second, "detectors": rows(report), "targets": TARGETS},
        indent=2,
    )  # fmt: skip


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _warning(row: dict, warned: str, delay: str) -> str:
    if row["detector"] == "limit_exceedance":
        return "–"
    return f"{row[warned]}/{row['incidents']}, {_fmt(row[delay], 'g')}"


def print_report(report: BenchReport, config: BenchConfig, console: Console) -> None:
    table = Table(
        "detector", "incidents", "recall", "alerts", "precision", "false / 10k clean", "risky makers", "median delay (results)",
        "median delay (hours)", "first warning", "first pattern warning",
        title=f"detectors on labelled scenarios (seed {config.seed}; {report.incident_results:,} incident-stream and "
        f"{report.clean_results:,} clean results)",
        title_justify="left",
    )  # fmt: skip
    for row in rows(report):
        recall_ok = row["recall"] is None or row["recall"] >= TARGETS["recall"]
        false_ok = row["false_per_10k_clean"] <= TARGETS["false_per_10k"]
        delay_ok = row["median_delay_results"] is None or row["median_delay_results"] <= TARGETS["median_delay_results"]
        style = "bold" if row["detector"] == "overall" else ""
        table.add_row(
            row["detector"],
            f"{row['detected']}/{row['incidents']}",
            ("" if recall_ok else "[red]") + _fmt(row["recall"], ".2f"),
            str(row["alerts"]),
            _fmt(row["precision"], ".2f"),
            ("" if false_ok else "[red]") + f"{row['false_per_10k_clean']:.2f}",
            str(row["risky_maker_alerts"]),
            ("" if delay_ok else "[red]") + _fmt(row["median_delay_results"], "g"),
            _fmt(row["median_delay_hours"], ".1f"),
            _warning(row, "first_warned", "first_warning_median_delay_results"),
            _warning(row, "first_pattern_warned", "first_pattern_warning_median_delay_results"),
            style=style,
        )
    console.print(table, width=max(console.width, 190))
    console.print(
        f"targets: recall ≥ {TARGETS['recall']}, ≤ {TARGETS['false_per_10k']:g} false alert per 10,000 clean results, "
        f"median delay ≤ {TARGETS['median_delay_results']} results (red: missed). Alerts about risky makers (both streams) report "
        "makers the simulator made sloppy: true, not false. First warning: incidents warned of and the median delay (results) "
        "of the first firing of any detector citing one of their results (in their kind's row); first pattern warning: the same "
        "without limit exceedance. "
        f"Detectors ran at {report.results_per_second:,.0f} results/s."
    )
