"""Settings shared by every deployable: the Kafka connection and the settings base class.

Each deployable (agent, grid feeder, worker, sink) has its own pydantic-settings class
deriving from :class:`LlcrSettings`. Values come from, highest precedence first:
keyword arguments (the CLI), environment variables ``LLCR_*`` (nested with ``__``, e.g.
``LLCR_KAFKA__BOOTSTRAP_SERVERS``), then an optional TOML file, then defaults. The
environment (and the file) are read only inside :meth:`LlcrSettings.load`, which entry
points call; a settings object constructed directly is its arguments and defaults.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from schemas.codec import FramingName
from schemas.errors import ConfigError
from schemas.topics import DEFAULT_PREFIX, Topics

_config_file: ContextVar[Path | None] = ContextVar("llcr_config_file", default=None)
# True only inside LlcrSettings.load: a settings object built anywhere else (a library
# call, a test) is its arguments and defaults, whatever LLCR_* the process has.
_reading_environment: ContextVar[bool] = ContextVar("llcr_reading_environment", default=False)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseModel):
    """How to reach the Kafka cluster. Security options map 1:1 to librdkafka properties."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = DEFAULT_PREFIX
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    framing: FramingName = "single-object"
    registry_ids: dict[int, str] = Field(
        default_factory=dict,
        description="Schema Registry id -> schema name, for framing = 'confluent'.",
    )
    client_properties: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties passed through verbatim (e.g. 'client.rack').",
    )

    @model_validator(mode="after")
    def _sasl_complete(self) -> Self:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                "sasl_username and sasl_password"
            )
        return self

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def librdkafka(self) -> dict[str, str]:
        """The connection part of a confluent-kafka (librdkafka) configuration.

        Contains secrets in clear text: hand it to the client, never log it.
        """
        conf: dict[str, str] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": _reveal(self.sasl_password),
            "ssl.ca.location": _path(self.ssl_ca_location),
            "ssl.certificate.location": _path(self.ssl_certificate_location),
            "ssl.key.location": _path(self.ssl_key_location),
            "ssl.key.password": _reveal(self.ssl_key_password),
        }
        conf.update({key: value for key, value in optional.items() if value is not None})
        conf.update(self.client_properties)
        return conf


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _path(path: Path | None) -> str | None:
    return str(path) if path is not None else None


class LlcrSettings(BaseSettings):
    """Base of every deployable's settings: env prefix ``LLCR_``, optional TOML file."""

    model_config = SettingsConfigDict(
        env_prefix="LLCR_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        if _reading_environment.get():
            sources.append(env_settings)
        path = _config_file.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Self:
        """Read settings from overrides, the environment and ``config_file``.

        Raises :class:`ConfigError` with every problem listed (secrets are not echoed).
        """
        if config_file is not None and not config_file.is_file():
            raise ConfigError(f"config file not found: {config_file}")
        with _using_config_file(config_file):
            try:
                return cls(**overrides)
            except ValidationError as exc:
                raise ConfigError(f"invalid {cls.__name__}: {_problems(exc)}") from None

    @classmethod
    def checked(cls, **fields: Any) -> Self:
        """Settings from ``fields`` and defaults only (no environment, no file), with
        :class:`ConfigError` for what is invalid: what an orchestrator gives a child."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise ConfigError(f"invalid {cls.__name__}: {_problems(exc)}") from None

    def child_env(self) -> dict[str, str]:
        """The ``LLCR_*`` variables that give a child process the fields set on this object
        (and only those; the rest is the child's own environment and defaults). A nested
        model's set fields become ``LLCR_<FIELD>__<SUB>``; lists, dicts and models are
        JSON, secrets are revealed (the environment is how a child receives them)."""
        env: dict[str, str] = {}
        for name in sorted(self.model_fields_set):
            value = getattr(self, name)
            if isinstance(value, BaseModel):
                for sub in sorted(value.model_fields_set):
                    env[f"LLCR_{name.upper()}__{sub.upper()}"] = _env_text(value, sub)
            else:
                env[f"LLCR_{name.upper()}"] = _env_text(self, name)
        return env

    def redacted(self) -> dict[str, Any]:
        """A JSON-safe dump for display; secrets appear as '**********'."""
        return self.model_dump(mode="json")


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def _env_text(model: BaseModel, name: str) -> str:
    """One field as an environment value pydantic-settings reads back to the same value."""
    value = getattr(model, name)
    if value is None:
        raise ValueError(f"{name}: None cannot be given through the environment; leave it unset")
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, str | Path):
        return str(value)
    return json.dumps(model.model_dump(mode="json", include={name})[name])


@contextmanager
def _using_config_file(path: Path | None) -> Iterator[None]:
    token = _config_file.set(path)
    reading = _reading_environment.set(True)
    try:
        yield
    finally:
        _reading_environment.reset(reading)
        _config_file.reset(token)
