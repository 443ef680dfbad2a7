"""Print the detector benchmark as a table (or JSON), with the targets beside the figures."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

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
        "detected_within_target_delay": sum(1 for d in score.delays_results if d <= TARGETS["median_delay_results"]),
        "median_delay_hours": median(score.delays_hours),
        "first_warned": score.first_warning.warned,
        "first_warning_median_delay_results": median(score.first_warning.delays_results),
        "first_pattern_warned": score.first_pattern_warning.warned,
        "first_pattern_warning_median_delay_results": median(score.first_pattern_warning.delays_results),
    }


def rows(report: BenchReport) -> list[dict]:
    return [_row(s, report.clean_results) for s in report.scores.values()] + [_row(report.overall, report.clean_results)]


def _figures(report: BenchReport) -> dict:
    return {"incident_results": report.incident_results, "clean_results": report.clean_results,
            "results_per_second": report.results_per_second, "detectors": rows(report)}  # fmt: skip


def report_json(report: BenchReport, config: BenchConfig, seeds: dict[int, BenchReport] | None = None) -> str:
    """One seed's figures; with ``seeds`` (several), ``report`` is their pool and each seed's follow."""
    figures = {"config": dataclasses.asdict(config), **_figures(report), "targets": TARGETS}
    if seeds:
        figures["config"]["seed"] = list(seeds)
        figures["seeds"] = {seed: _figures(r) for seed, r in seeds.items()}
    return json.dumps(figures, indent=2)


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _warning(row: dict, warned: str, delay: str) -> str:
    if row["detector"] == "limit_exceedance":
        return "–"
    return f"{row[warned]}/{row['incidents']}, {_fmt(row[delay], 'g')}"


def _marks(row: dict) -> tuple[str, str, str]:
    """Red for recall, false alarms and delay where they miss the targets."""
    recall_ok = row["recall"] is None or row["recall"] >= TARGETS["recall"]
    false_ok = row["false_per_10k_clean"] <= TARGETS["false_per_10k"]
    delay_ok = row["median_delay_results"] is None or row["median_delay_results"] <= TARGETS["median_delay_results"]
    return tuple("" if ok else "[red]" for ok in (recall_ok, false_ok, delay_ok))


def print_seeds(seeds: dict[int, BenchReport], console: Console) -> None:
    """One line a seed: the overall figures, so that a change is seen to hold on every seed, not on average."""
    table = Table("seed", "recall", "precision", "false / 10k clean", "median delay (results)",
                  f"found within {TARGETS['median_delay_results']} results", "first pattern warning",
                  title="overall, seed by seed", title_justify="left")  # fmt: skip
    for seed, report in seeds.items():
        row = rows(report)[-1]
        recall_mark, false_mark, delay_mark = _marks(row)
        table.add_row(
            str(seed),
            f"{recall_mark}{row['detected']}/{row['incidents']} = {_fmt(row['recall'], '.2f')}",
            _fmt(row["precision"], ".2f"),
            f"{false_mark}{row['false_per_10k_clean']:.2f}",
            f"{delay_mark}{_fmt(row['median_delay_results'], 'g')}",
            f"{row['detected_within_target_delay']}/{row['detected']}",
            _warning(row, "first_pattern_warned", "first_pattern_warning_median_delay_results"),
        )
    console.print(table)


def print_report(report: BenchReport, config: BenchConfig, console: Console, seeds: Sequence[int] = ()) -> None:
    """The table of every detector; ``seeds``, if several, are those ``report`` pools."""
    where = f"seeds {', '.join(map(str, seeds))} pooled" if len(seeds) > 1 else f"seed {config.seed}"
    table = Table(
        "detector", "incidents", "recall", "alerts", "precision", "false / 10k clean", "risky makers", "median delay (results)",
        "median delay (hours)", "first warning", "first pattern warning",
        title=f"detectors on labelled scenarios ({where}; {report.incident_results:,} incident-stream and "
        f"{report.clean_results:,} clean results)",
        title_justify="left",
    )  # fmt: skip
    for row in rows(report):
        recall_mark, false_mark, delay_mark = _marks(row)
        style = "bold" if row["detector"] == "overall" else ""
        table.add_row(
            row["detector"],
            f"{row['detected']}/{row['incidents']}",
            recall_mark + _fmt(row["recall"], ".2f"),
            str(row["alerts"]),
            _fmt(row["precision"], ".2f"),
            false_mark + f"{row['false_per_10k_clean']:.2f}",
            str(row["risky_maker_alerts"]),
            delay_mark + _fmt(row["median_delay_results"], "g"),
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
