from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings, settings_table


def test_the_readme_lists_every_setting_as_the_code_defines_it():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert settings_table() in readme


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RISKWATCH_TOPIC_PARTITIONS", "3")
    monkeypatch.setenv("RISKWATCH_KAFKA_BOOTSTRAP", "kafka://k1:9092,k2:9093")
    monkeypatch.setenv("RISKWATCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RISKWATCH_CLICKHOUSE_PASSWORD", "s3cret")
    settings = Settings()
    assert settings.topic_partitions == 3
    assert settings.faust_broker_url == "kafka://k1:9092;kafka://k2:9093"
    assert settings.bootstrap_host_port == ("k1", 9092)
    assert settings.effective_clickhouse_url == f"chdb://{tmp_path.resolve() / 'clickhouse'}"
    assert "s3cret" not in repr(settings)


def test_a_bad_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RISKWATCH_TOPIC_PARTITIONS", "zero")
    with pytest.raises(ValidationError, match="topic_partitions"):
        Settings()
