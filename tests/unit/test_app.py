"""The faust app is built from our settings only; stray faust environment variables are ignored."""

from __future__ import annotations

import pytest

from schemas.settings import KafkaSettings
from streams.app import create_app
from streams.settings import WorkerSettings


def test_faust_environment_variables_do_not_override_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "BROKER_URL": "kafka://evil:9092",
        "APP_DATADIR": "/tmp/evil",
        "BROKER_SESSION_TIMEOUT": "600",
        "PROCESSING_GUARANTEE": "exactly_once",
        "APP_ENV_PREFIX": "EVIL_",
        "EVIL_BROKER_URL": "kafka://evil2:9092",
    }.items():
        monkeypatch.setenv(name, value)
    settings = WorkerSettings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:19092"))
    app = create_app(settings)
    assert [str(url) for url in app.conf.broker] == ["kafka://127.0.0.1:19092"]
    assert str(app.conf.datadir).startswith(str(settings.data_dir))
    assert app.conf.broker_session_timeout == settings.session_timeout_s
    assert app.conf.processing_guarantee.value == "at_least_once"


def test_sasl_settings_become_faust_credentials() -> None:
    import faust

    settings = WorkerSettings(
        kafka=KafkaSettings(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="worker",
            sasl_password="pw",  # type: ignore[arg-type]
        )
    )
    credentials = create_app(settings).conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "worker" and credentials.mechanism.value == "SCRAM-SHA-256"
