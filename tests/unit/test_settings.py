"""Settings: env prefix, TOML file, precedence, security passthrough, secrets never shown."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agents.settings import GpuAgentSettings
from schemas.errors import ConfigError
from schemas.settings import KafkaSettings, LlcrSettings
from streams.settings import SinkSettings, WorkerSettings


def test_environment_with_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLCR_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("LLCR_ZONE", "US-CAL-CISO")
    monkeypatch.setenv("LLCR_SITE", "sjc-1")
    settings = GpuAgentSettings.load()
    assert settings.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.zone == "US-CAL-CISO"


def test_toml_file_and_environment_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('zone = "FR"\nsite = "par1"\n[kafka]\nbootstrap_servers = "file:9092"\n')
    monkeypatch.setenv("LLCR_SITE", "from-env")
    settings = GpuAgentSettings.load(config)
    assert (settings.zone, settings.site, settings.kafka.bootstrap_servers) == (
        "FR",
        "from-env",
        "file:9092",
    )
    assert GpuAgentSettings.load(config, zone="GB").zone == "GB"  # CLI overrides beat both


def test_zone_and_site_are_required_and_a_zone_must_be_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LLCR_ZONE", raising=False)
    monkeypatch.delenv("LLCR_SITE", raising=False)
    with pytest.raises(ConfigError) as missing:
        GpuAgentSettings.load()
    assert "zone: Field required" in str(missing.value)
    assert "site: Field required" in str(missing.value)
    for wrong, near in (("de", "DE"), ("Narnia", None), ("US-CAL-CSIO", "US-CAL-CISO")):
        with pytest.raises(ConfigError) as bad:
            GpuAgentSettings.load(zone=wrong, site="s1")
        assert f"{wrong!r} is not a known grid zone" in str(bad.value)
        assert near is None or f"did you mean {near}" in str(bad.value)
    with pytest.raises(ConfigError, match="site 'a b'"):
        GpuAgentSettings.load(zone="DE", site="a b")
    assert GpuAgentSettings.load(zone="XX-LAB", site="s1", extra_zones=["XX-LAB"]).zone == "XX-LAB"
    assert GpuAgentSettings.load(zone="DE", site="s1").source == "nvml"  # never sim by default
    # a WattTime region or an EIA balancing authority names the zone it lies in
    aliases = {"CAISO_NORTH": "US-CAL-CISO", "PJM": "US-MIDA-PJM", "ERCO": "US-TEX-ERCO"}
    for alias, zone in aliases.items():
        assert GpuAgentSettings.load(zone=alias, site="s1").zone == zone


def test_unknown_key_in_file_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('zoen = "FR"\n')
    with pytest.raises(ConfigError, match="zoen"):
        GpuAgentSettings.load(config)
    with pytest.raises(ConfigError, match="not found"):
        GpuAgentSettings.load(tmp_path / "absent.toml")


def test_sasl_ssl_options_pass_through_to_librdkafka(tmp_path: Path) -> None:
    kafka = KafkaSettings(
        bootstrap_servers="b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="llcr",
        sasl_password="s3cret-pw",  # type: ignore[arg-type]
        ssl_ca_location=tmp_path / "ca.pem",
        client_properties={"client.rack": "rack-7"},
    )
    assert kafka.librdkafka() == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "llcr",
        "sasl.password": "s3cret-pw",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "client.rack": "rack-7",
    }


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ConfigError, match="sasl"):
        LlcrSettings.load(kafka={"security_protocol": "SASL_SSL"})


def test_secrets_never_appear_in_repr_dump_or_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LLCR_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("LLCR_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("LLCR_KAFKA__SASL_USERNAME", "u")
    monkeypatch.setenv("LLCR_KAFKA__SASL_PASSWORD", "kafka-pw-123")
    monkeypatch.setenv("LLCR_CLICKHOUSE__PASSWORD", "ch-pw-456")
    settings = SinkSettings.load()
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s %r", settings, settings.redacted())
    shown = repr(settings) + str(settings) + str(settings.redacted()) + caplog.text
    assert "kafka-pw-123" not in shown and "ch-pw-456" not in shown
    assert settings.clickhouse.password.get_secret_value() == "ch-pw-456"


def test_invalid_value_message_does_not_echo_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLCR_KAFKA__SASL_PASSWORD", "leak-me")
    monkeypatch.setenv("LLCR_SAMPLE_INTERVAL_S", "-1")
    with pytest.raises(ConfigError) as err:
        GpuAgentSettings.load(zone="DE", site="s1")
    assert "sample_interval_s" in str(err.value) and "leak-me" not in str(err.value)


def test_only_load_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A settings object built inside a library call or a test is its arguments and
    defaults; the process's LLCR_* reach only what an entry point loads."""
    monkeypatch.setenv("LLCR_ZONES", '["XX"]')
    monkeypatch.setenv("LLCR_KAFKA__BOOTSTRAP_SERVERS", "elsewhere:9092")
    built = WorkerSettings()
    assert built.zones != ["XX"] and built.kafka.bootstrap_servers == "127.0.0.1:9092"
    loaded = WorkerSettings.load()
    assert loaded.zones == ["XX"] and loaded.kafka.bootstrap_servers == "elsewhere:9092"
    assert WorkerSettings().zones == built.zones  # load() left nothing behind


def test_a_child_env_reads_back_to_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an orchestrator sets on a child's settings reaches the child unchanged through
    LLCR_*: nested models, lists, dicts of models, paths and secrets included."""
    from streams.settings import ActionsSettings, CaptureUnitConfig, ClickHouseSettings

    unit = CaptureUnitConfig(
        unit_id="u1", capacity_kg_per_h=0.5, thermal_kwh_per_t=2000, electric_kwh_per_t=2700
    )
    given = ActionsSettings.checked(
        capture_units={"s1": unit},
        min_lot_g=100,
        plan_quiet_s=0.5,
        ledger_head=Path("/r/head.json"),
        provider_token="tok-secret",  # type: ignore[arg-type]
    )
    env = given.child_env()
    assert env["LLCR_PROVIDER_TOKEN"] == "tok-secret" and "LLCR_TICK_S" not in env  # only set
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    back = ActionsSettings.load()
    assert back.capture_units == given.capture_units and back.ledger_head == given.ledger_head
    assert (back.min_lot_g, back.plan_quiet_s) == (100, 0.5)
    assert back.provider_token.get_secret_value() == "tok-secret"
    sink = SinkSettings.checked(clickhouse=ClickHouseSettings(dsn="chdb:/x"), batch_max_wait_s=0.5)
    assert sink.child_env() == {"LLCR_BATCH_MAX_WAIT_S": "0.5", "LLCR_CLICKHOUSE__DSN": "chdb:/x"}
    with pytest.raises(ConfigError, match="min_lot_g"):
        ActionsSettings.checked(min_lot_g=0)  # invalid for the child: refused in the parent
