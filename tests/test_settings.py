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


def test_secrets_come_from_files_and_the_environment_wins(monkeypatch, tmp_path):
    from streams.settings import load_settings

    (tmp_path / "riskwatch_clickhouse_password").write_text("from-file")
    (tmp_path / "riskwatch_kafka_sasl_password").write_text("kafka-from-file")
    monkeypatch.setenv("RISKWATCH_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("RISKWATCH_KAFKA_SASL_PASSWORD", "from-env")
    settings = load_settings()
    assert settings.clickhouse_password.get_secret_value() == "from-file"
    assert settings.kafka_sasl_password.get_secret_value() == "from-env"


def test_kafka_security_settings_reach_every_client():
    import ssl

    import faust

    plain = Settings()
    assert plain.kafka_client_options() == {"security_protocol": "PLAINTEXT"} and plain.faust_credentials() is None
    sasl = Settings(kafka_security_protocol="sasl_ssl", kafka_sasl_username="lab", kafka_sasl_password="pw", kafka_sasl_mechanism="SCRAM-SHA-256")
    options = sasl.kafka_client_options()
    assert options["security_protocol"] == "SASL_SSL" and isinstance(options["ssl_context"], ssl.SSLContext)
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == ("SCRAM-SHA-256", "lab", "pw")
    credentials = sasl.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials) and credentials.username == "lab"
    assert isinstance(Settings(kafka_security_protocol="SSL").faust_credentials(), faust.SSLCredentials)
    with pytest.raises(ValidationError, match="kafka_security_protocol"):
        Settings(kafka_security_protocol="TLS")
