"""``riskwatch bulletin``: the document the cities bring to their risk-warning meeting.

One self-contained HTML file (charts embedded as PNG, no network), in Chinese or English,
built from ClickHouse for a period: headline figures against the previous period of the same
length, failure rates by city and by category, alerts by severity with their explanations,
control charts of the segments that alerted, the cross-city picture, lab z-scores
(ISO 13528, the lab-bias detector's own computation) and each detector's precision from the
officers' feedback.
"""

from __future__ import annotations

import base64
import io
import math
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from clickhouse_connect.driver.client import Client
from jinja2 import Environment, PackageLoader, select_autoescape

from detectors.lab_bias import LabBias
from schemas.catalogue import category_name, city_name, test_item_name
from streams.clickhouse import RESULT_COLUMNS, result_from_row

SEVERITIES = ("serious", "potentially_serious", "not_serious")
WORDS = {
    "zh": {
        "title": "产品质量安全风险预警通报", "period": "统计期间", "previous": "上期", "results": "检验结果", "samples": "样品批次",
        "failures": "不合格结果", "failure_rate": "不合格率", "change": "较上期", "by_city": "各市不合格率", "by_category": "不合格率较高的产品类别",
        "city": "城市", "category": "产品类别", "alerts": "预警", "severity": {"serious": "严重", "potentially_serious": "较严重", "not_serious": "一般"},
        "control": "预警项目控制图", "cross_city": "跨市风险", "hazard": "风险项目", "cities": "涉及城市", "when": "时间",
        "labs": "实验室比对 (ISO 13528 z比分数)", "lab": "检验机构", "z_note": "|z| ≥ 2 可疑，≥ 3 不满意", "precision": "预警模型准确率（据处置反馈）",
        "detector": "预警模型", "judged": "已处置", "real": "属实", "false": "误报", "none": "无", "synthetic": "本通报数据为模拟数据。",
        "generated": "生成时间", "limit": "限量", "value_to_limit": "检测值/限量", "rolling": "滚动中位数", "more": "另有{n}条",
    },  # fmt: skip
    "en": {
        "title": "Product safety risk bulletin", "period": "Period", "previous": "previous period", "results": "results", "samples": "samples",
        "failures": "failing results", "failure_rate": "failure rate", "change": "vs previous", "by_city": "Failure rate by city",
        "by_category": "Categories with the highest failure rates", "city": "City", "category": "Category", "alerts": "Alerts",
        "severity": {"serious": "serious", "potentially_serious": "potentially serious", "not_serious": "not serious"},
        "control": "Control charts of the segments that alerted", "cross_city": "Cross-city picture", "hazard": "Hazard", "cities": "Cities",
        "when": "When", "labs": "Lab comparison (ISO 13528 z-scores)", "lab": "Lab", "z_note": "|z| ≥ 2 questionable, ≥ 3 unsatisfactory",
        "precision": "Detector precision from officers' feedback", "detector": "Detector", "judged": "judged", "real": "real", "false": "false alarms",
        "none": "none", "synthetic": "The data in this bulletin are simulated.", "generated": "Generated", "limit": "limit",
        "value_to_limit": "value / limit", "rolling": "rolling median", "more": "{n} more",
    },  # fmt: skip
}


def _cjk_font() -> str | None:
    """A font that has Chinese glyphs (Debian's fonts-noto-cjk), for matplotlib."""
    from matplotlib import font_manager

    for attempt in range(2):
        for font in font_manager.fontManager.ttflist:
            if "CJK" in font.name:
                return font.name
        if attempt == 0:  # a font installed after matplotlib cached its list: look again
            font_manager.fontManager = font_manager._load_fontmanager(try_read_cache=False)
    return None


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    font = _cjk_font()
    if font:
        plt.rcParams["font.sans-serif"] = [font, "DejaVu Sans"]
        plt.rcParams["font.family"] = "sans-serif"
    plt.rcParams["axes.unicode_minus"] = False
    return plt


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _plt().close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass(slots=True)
class Headline:
    results: int
    samples: int
    failures: int
    previous_results: int
    previous_failures: int

    @property
    def rate(self) -> float:
        return self.failures / self.results if self.results else 0.0

    @property
    def previous_rate(self) -> float | None:
        return self.previous_failures / self.previous_results if self.previous_results else None

    @property
    def change(self) -> float | None:
        """Change of the failure rate against the previous period (None without one)."""
        return None if self.previous_rate is None else self.rate - self.previous_rate


@dataclass(slots=True)
class Bulletin:
    start: date
    end: date
    lang: str
    cities: list[str]
    headline: Headline
    by_city: list[dict] = field(default_factory=list)
    by_category: list[dict] = field(default_factory=list)
    alerts: dict[str, list[dict]] = field(default_factory=dict)
    alert_counts: dict[str, int] = field(default_factory=dict)
    charts: list[dict] = field(default_factory=list)
    city_chart: str = ""
    cross_city: list[dict] = field(default_factory=list)
    lab_z: list[dict] = field(default_factory=list)
    precision: list[dict] = field(default_factory=list)
    synthetic: bool = False


class BulletinBuilder:
    def __init__(self, client: Client, start: date, end: date, cities: list[str] | None = None, lang: str = "zh") -> None:
        if lang not in WORDS:
            raise ValueError("lang must be zh or en")
        if end <= start:
            raise ValueError("--to must be after --from")
        self.client, self.start, self.end, self.cities, self.lang = client, start, end, cities or [], lang
        self.params = {"start": datetime.combine(start, datetime.min.time(), UTC), "end": datetime.combine(end, datetime.min.time(), UTC),
                       "cities": self.cities, "all": not self.cities}  # fmt: skip
        length = end - start
        self.previous = {**self.params, "start": self.params["start"] - length, "end": self.params["start"]}

    _IN_PERIOD = "sampled_at >= {start:DateTime64(3, 'UTC')} AND sampled_at < {end:DateTime64(3, 'UTC')} AND ({all:Bool} OR has({cities:Array(String)}, city))"
    _ALERTS_IN_PERIOD = (
        "first_seen >= {start:DateTime64(3, 'UTC')} AND first_seen < {end:DateTime64(3, 'UTC')} "
        "AND ({all:Bool} OR hasAny({cities:Array(String)}, cities))"
    )

    def _rows(self, sql: str, params: dict | None = None) -> list[tuple]:
        return self.client.query(sql, parameters=params or self.params).result_rows

    def build(self) -> Bulletin:
        counts = "SELECT count(), uniqExact(lab_id, sample_id), countIf(verdict = 'fail') FROM results FINAL WHERE " + self._IN_PERIOD
        now_counts, before = self._rows(counts)[0], self._rows(counts, self.previous)[0]
        bulletin = Bulletin(
            self.start, self.end, self.lang, self.cities, Headline(int(now_counts[0]), int(now_counts[1]), int(now_counts[2]), int(before[0]), int(before[2]))
        )
        bulletin.synthetic = bool(self._rows("SELECT countIf(synthetic) > 0 FROM results FINAL WHERE " + self._IN_PERIOD)[0][0])
        self._rates(bulletin)
        self._alerts(bulletin)
        self._control_charts(bulletin)
        self._cross_city(bulletin)
        self._lab_z(bulletin)
        self._precision(bulletin)
        return bulletin

    def _rates(self, bulletin: Bulletin) -> None:
        rate_sql = (
            "SELECT {key}, count() AS n, countIf(verdict = 'fail') AS f FROM results FINAL WHERE " + self._IN_PERIOD + " GROUP BY {key}"
        )
        previous = {k: (n, f) for k, n, f in self._rows(rate_sql.replace("{key}", "city"), self.previous)}
        for city, n, f in sorted(self._rows(rate_sql.replace("{key}", "city")), key=lambda r: -r[2] / r[1]):
            p_n, p_f = previous.get(city, (0, 0))
            bulletin.by_city.append({"code": city, "name": city_name(city, self.lang), "results": n, "failures": f, "rate": f / n,
                                     "previous_rate": p_f / p_n if p_n else None})  # fmt: skip
        categories = sorted(self._rows(rate_sql.replace("{key}", "category")), key=lambda r: (-r[2] / r[1], -r[1]))
        bulletin.by_category = [
            {"code": c, "name": category_name(c, self.lang), "results": n, "failures": f, "rate": f / n} for c, n, f in categories if f > 0
        ][:10]
        if bulletin.by_city:
            plt = _plt()
            figure, axis = plt.subplots(figsize=(6.5, 2.8))
            names = [c["name"] for c in bulletin.by_city]
            axis.bar(names, [100 * c["rate"] for c in bulletin.by_city], color="#c0392b", label=WORDS[self.lang]["failure_rate"])
            earlier = [(c["name"], 100 * c["previous_rate"]) for c in bulletin.by_city if c["previous_rate"] is not None]
            if earlier:
                axis.plot(*zip(*earlier, strict=True), "o", color="#34495e", label=WORDS[self.lang]["previous"])
            axis.set_ylabel("%")
            axis.legend(frameon=False)
            axis.spines[["top", "right"]].set_visible(False)
            bulletin.city_chart = _png(figure)

    def _alerts(self, bulletin: Bulletin) -> None:
        rows = self._rows(
            "SELECT toString(severity), detector, title, title_zh, explanation, explanation_zh, count, cities, first_seen, score, status "
            "FROM alerts_current WHERE " + self._ALERTS_IN_PERIOD + " ORDER BY score DESC, first_seen"
        )
        for severity in SEVERITIES:
            items = [r for r in rows if r[0] == severity]
            bulletin.alert_counts[severity] = len(items)
            bulletin.alerts[severity] = [
                {"detector": r[1], "title": r[3] if self.lang == "zh" else r[2], "explanation": r[5] if self.lang == "zh" else r[4],
                 "count": r[6], "cities": "、".join(city_name(c, self.lang) for c in r[7]) if self.lang == "zh" else ", ".join(city_name(c) for c in r[7]),
                 "first_seen": r[8], "status": r[10]}
                for r in items
            ]  # fmt: skip

    def _control_charts(self, bulletin: Bulletin, limit: int = 4) -> None:
        segments = self._rows(
            "SELECT category, test_item, cities[1] AS city, max(severity) AS worst, count() AS n FROM alerts FINAL "
            "WHERE " + self._ALERTS_IN_PERIOD + " AND detector IN ('limit_exceedance', 'value_anomaly', 'limit_drift') "
            "AND test_item IS NOT NULL GROUP BY category, test_item, city ORDER BY worst DESC, n DESC LIMIT 12"
        )
        plt = _plt()
        words = WORDS[self.lang]
        for category, item, city, _worst, _n in segments:
            points = self._rows(
                "SELECT sampled_at, limit_ratio, verdict = 'fail' FROM results FINAL WHERE category = {c:String} AND test_item = {i:String} "
                "AND city = {city:String} AND limit_ratio IS NOT NULL AND sampled_at >= {start:DateTime64(3, 'UTC')} - INTERVAL 60 DAY "
                "AND sampled_at < {end:DateTime64(3, 'UTC')} ORDER BY sampled_at",
                {**self.params, "c": category, "i": item, "city": city},
            )
            if len(points) < 5:
                continue
            times, ratios, failed = zip(*points, strict=True)
            figure, axis = plt.subplots(figsize=(6.5, 2.6))
            axis.plot(times, ratios, "-", color="#95a5a6", linewidth=0.8)
            axis.scatter(times, ratios, s=12, c=["#c0392b" if f else "#2c3e50" for f in failed], zorder=3)
            rolling = [sorted(ratios[max(0, k - 30) : k + 1])[len(ratios[max(0, k - 30) : k + 1]) // 2] for k in range(len(ratios))]
            axis.plot(times, rolling, color="#2980b9", linewidth=1.2, label=words["rolling"])
            axis.axhline(1.0, color="#c0392b", linestyle="--", linewidth=1, label=words["limit"])
            axis.axvspan(self.params["start"], self.params["end"], color="#f5e6cc", alpha=0.5, zorder=0)
            axis.set_ylabel(words["value_to_limit"])
            axis.set_yscale("log")
            axis.legend(frameon=False, fontsize=8, loc="upper left")
            axis.spines[["top", "right"]].set_visible(False)
            figure.autofmt_xdate()
            title = f"{city_name(city, self.lang)} · {category_name(category, self.lang)} · {test_item_name(item, self.lang)}"
            axis.set_title(title, fontsize=10)
            bulletin.charts.append({"title": title, "image": _png(figure)})
            if len(bulletin.charts) >= limit:
                break

    def _cross_city(self, bulletin: Bulletin) -> None:
        for category, item, cities, first, last, explanation, explanation_zh in self._rows(
            "SELECT category, test_item, cities, first_seen, last_seen, explanation, explanation_zh FROM alerts FINAL "
            "WHERE detector = 'cross_city' AND " + self._ALERTS_IN_PERIOD + " ORDER BY first_seen"
        ):
            separator = "、" if self.lang == "zh" else ", "
            bulletin.cross_city.append({
                "hazard": f"{category_name(category, self.lang)} · {test_item_name(item, self.lang) if item else ''}",
                "cities": separator.join(city_name(c, self.lang) for c in cities), "when": f"{first:%Y-%m-%d} – {last:%Y-%m-%d}",
                "explanation": explanation_zh if self.lang == "zh" else explanation,
            })  # fmt: skip

    def _lab_z(self, bulletin: Bulletin, top: int = 8) -> None:
        """ISO 13528 z-scores with the lab-bias detector's own computation, on the period's results."""
        columns = ", ".join(RESULT_COLUMNS)
        rows = self._rows(f"SELECT {columns} FROM results FINAL WHERE " + self._IN_PERIOD + " ORDER BY published_at")  # noqa: S608
        detector = LabBias(min_results=8, min_labs=3)
        for row in rows:
            detector.learn_one(result_from_row(row))
        scored = []
        for category, item in detector.segments:
            z = detector.z_scores(category, item)
            if z:
                scored.append((max(abs(v) for v in z.values()), category, item, z))
        for worst, category, item, z in sorted(scored, reverse=True)[:top]:
            bulletin.lab_z.append({
                "segment": f"{category_name(category, self.lang)} · {test_item_name(item, self.lang)}", "worst": worst,
                "labs": [{"lab": lab, "z": value, "flag": "bad" if abs(value) >= 3 else "warn" if abs(value) >= 2 else ""}
                         for lab, value in sorted(z.items())],
            })  # fmt: skip

    def _precision(self, bulletin: Bulletin) -> None:
        for detector, alerts, judged, real, false in self._rows(
            "SELECT detector, count(), countIf(status IN ('resolved', 'false_alarm')), countIf(status = 'resolved'), "
            "countIf(status = 'false_alarm') FROM alerts_current WHERE " + self._ALERTS_IN_PERIOD + " GROUP BY detector ORDER BY detector"
        ):
            bulletin.precision.append({"detector": detector, "alerts": alerts, "judged": judged, "real": real, "false": false,
                                       "precision": real / judged if judged else None})  # fmt: skip


def render(bulletin: Bulletin) -> str:
    environment = Environment(loader=PackageLoader("streams", "templates"), autoescape=select_autoescape(["html"]))
    environment.filters["pct"] = lambda v, digits=1: "–" if v is None else f"{100 * v:.{digits}f} %"
    environment.filters["signed_pp"] = lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:+.1f}"
    template = environment.get_template("bulletin.html")
    return template.render(b=bulletin, w=WORDS[bulletin.lang], severities=SEVERITIES, generated=datetime.now(UTC))


def write(bulletin: Bulletin, path: Path) -> Path:
    path.write_text(render(bulletin), encoding="utf-8")
    return path


def to_pdf(html: Path) -> Path:
    """Print the HTML to PDF with headless Chromium, where it is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise RuntimeError("no PDF converter: install Debian's chromium to get a PDF beside the HTML")
    pdf = html.with_suffix(".pdf")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--print-to-pdf={pdf}", "--no-pdf-header-footer", html.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return pdf


def default_period(client: Client) -> tuple[date, date]:
    """The period the stored results cover (for the demo)."""
    first, last = client.query("SELECT min(sampled_at), max(sampled_at) FROM results FINAL").result_rows[0]
    return first.date(), last.date() + timedelta(days=1)
