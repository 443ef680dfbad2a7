"""Real Prometheus and Alertmanager (Debian packages) on loopback, around a running worker.

Prometheus scrapes the worker and a shipped pipeline rule fires; the worker pages a serious
alert itself; Alertmanager, with the shipped routing and inhibition, delivers both to a webhook
run by the test; a lab-silent alert inhibits that lab's per-item alerts. The worker's metrics
pass ``promtool check metrics``; the shipped configs pass promtool and amtool.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
import yaml

from schemas.results import Alert, Severity
from streams.broker import free_port
from streams.children import terminate
from streams.paging import to_alertmanager
from streams.worker_process import WorkerProcess
from tests.conftest import example_report
from tests.test_end_to_end import send_all, topics, worker_env

pytestmark = pytest.mark.timeout(400)
DEPLOY = Path(__file__).parent.parent / "deploy"


def test_shipped_configs_pass_promtool_and_amtool():
    for command in (
        ["promtool", "check", "rules", str(DEPLOY / "prometheus" / "rules.yml")],
        ["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        ["amtool", "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml")],
    ):
        run = subprocess.run(command, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr


class Webhook:
    """Alertmanager's webhook receiver: records every notification."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def alertnames(self) -> set[str]:
        return {a["labels"]["alertname"] for n in self.received for a in n["alerts"]}

    def close(self) -> None:
        self.server.shutdown()


def http_json(url: str, body=None):
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        text = response.read()
    return json.loads(text) if text else None


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, LookupError):  # not up yet, or no data yet
            pass
        time.sleep(0.5)
    raise TimeoutError(what)


def start_alertmanager(tmp: Path, webhook: Webhook) -> tuple[subprocess.Popen, str]:
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:  # the shipped routing and inhibition, our webhook, short waits
        for hook in receiver["webhook_configs"]:
            hook["url"] = webhook.url
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="1s", group_interval="1s")
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        ["prometheus-alertmanager", f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "alertmanager.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200, 30, "alertmanager not ready")  # noqa: S310
    return process, url


def start_prometheus(tmp: Path, worker_port: int, alertmanager_url: str) -> tuple[subprocess.Popen, str]:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules.yml")]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager_url.removeprefix("http://")]
    config["scrape_configs"][0] = {"job_name": "riskwatch", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'prom-data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200, 30, "prometheus not ready")  # noqa: S310
    return process, url


def serious_report() -> bytes:
    report = copy.deepcopy(example_report())
    now = datetime.now(UTC)
    report.update(sampled_at=(now - timedelta(days=3)).isoformat(), tested_at=(now - timedelta(days=2)).isoformat(), published_at=now.isoformat())
    report["items"][1]["value"] = 1.2  # cadmium 6× the limit: serious
    return orjson.dumps(report)


def risk_alert(detector: str, lab: str, test_item: str | None) -> dict:
    now = datetime.now(UTC)
    alert = Alert(
        alert_id=f"00000000-0000-0000-0000-0000000000{len(detector):02d}", detector=detector, signal=lab, severity=Severity.SERIOUS,
        score=1.0, title=f"{detector} at {lab}", explanation="test", category="food/grain_products/rice", first_seen=now,
        last_seen=now, detected_at=now, test_item=test_item, cities=["taian"], labs=[lab], evidence=["e"],
    )  # fmt: skip
    return to_alertmanager(alert, "http://grafana.invalid")


def test_prometheus_rule_and_pipeline_page_reach_the_webhook_and_silence_inhibits(broker, tmp_path):
    webhook = Webhook()
    alertmanager, am_url = start_alertmanager(tmp_path, webhook)
    env = worker_env(broker, tmp_path / "data", "paging")
    env.update(RISKWATCH_ALERTMANAGER_URL=am_url, RISKWATCH_PAGE_MIN_SEVERITY="serious", RISKWATCH_GRAFANA_URL="http://grafana.test")
    worker = WorkerProcess(env, tmp_path / "worker.log")
    prometheus = None
    try:
        worker.start()
        asyncio.run(worker.wait_ready())
        prometheus, prom_url = start_prometheus(tmp_path, int(env["RISKWATCH_WEB_PORT"]), am_url)
        wait_until(
            lambda: http_json(f"{prom_url}/api/v1/query?query=up%7Bjob%3D%22riskwatch%22%7D")["data"]["result"][0]["value"][1] == "1",
            60, "prometheus did not scrape the worker",
        )  # fmt: skip
        time.sleep(3)  # a few scrapes at zero before the rise
        messages = [(b"food/grain_products/rice", serious_report())] + [(b"junk", b"{not json") for _ in range(30)]
        asyncio.run(send_all(broker.bootstrap, topics("paging").reports_topic, messages))

        wait_until(lambda: "RiskwatchAlert" in webhook.alertnames(), 60, "the pipeline's page did not arrive")
        page = next(a for n in webhook.received for a in n["alerts"] if a["labels"]["alertname"] == "RiskwatchAlert")
        assert page["labels"]["severity"] == "serious" and page["labels"]["detector"] == "limit_exceedance"
        assert page["labels"]["city"] == "zibo" and page["labels"]["test_item"] == "cadmium" and page["labels"]["kind"] == "risk"
        assert page["annotations"]["dashboard"].startswith("http://grafana.test/d/riskwatch-category/")

        wait_until(lambda: "RiskwatchDeadLetterSpike" in webhook.alertnames(), 150, f"the rule did not fire: {webhook.alertnames()}")
        spike = next(a for n in webhook.received for a in n["alerts"] if a["labels"]["alertname"] == "RiskwatchDeadLetterSpike")
        assert spike["labels"]["kind"] == "pipeline" and spike["status"] == "firing"

        board = json.loads((DEPLOY.parent / "grafana" / "dashboards" / "pipeline-health.json").read_text(encoding="utf-8"))
        exprs = [t["expr"].replace("$__rate_interval", "5m") for p in board["panels"] for t in p["targets"]]
        for expr in exprs:  # every pipeline-health panel query is valid PromQL over the worker's metrics
            answer = http_json(f"{prom_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
            assert answer["status"] == "success", expr
        stored = http_json(f"{prom_url}/api/v1/query?{urllib.parse.urlencode({'query': exprs[0]})}")["data"]["result"]
        assert stored and float(stored[0]["value"][1]) > 0, "throughput panel shows the reports read"

        text = urllib.request.urlopen(worker.metrics_url, timeout=5).read()  # noqa: S310
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr

        # Inhibition: while TAQI is silent, its per-item alerts are suppressed; other labs' are not.
        http_json(f"{am_url}/api/v2/alerts", [risk_alert("silent_lab", "TAQI", None), risk_alert("limit_exceedance", "TAQI", "lead"),
                                               risk_alert("value_anomaly", "JNQI", "lead")])  # fmt: skip

        def states():
            alerts = http_json(f"{am_url}/api/v2/alerts")
            return {(a["labels"]["detector"], a["labels"]["lab"]): a["status"]["state"] for a in alerts if a["labels"].get("kind") == "risk"}

        settled = wait_until(lambda: (s := states()).get(("limit_exceedance", "TAQI")) == "suppressed" and s, 30, f"no inhibition: {states()}")
        assert settled[("silent_lab", "TAQI")] == "active" and settled[("value_anomaly", "JNQI")] == "active"
    finally:
        worker.stop()
        terminate(prometheus, 10)
        terminate(alertmanager, 10)
        webhook.close()
