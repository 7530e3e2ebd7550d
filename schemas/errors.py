"""The exception tree of the `schemas` package.

Everything a caller may want to catch derives from :class:`LlcrError`. Third-party
errors (fastavro, confluent-kafka, pydantic) are wrapped at the boundary with
``raise ... from exc`` so callers never depend on a library's exception types.
"""

from __future__ import annotations

from typing import Literal

CodecReason = Literal[
    "corrupt",  # bytes that are not a valid frame or not valid Avro for the writer schema
    "unknown_schema",  # the frame names a schema id / fingerprint we do not know
    "wrong_schema",  # a known schema, but not the one expected on this topic
    "invalid_record",  # a record to encode does not match its schema
]


class LlcrError(Exception):
    """Base class of every error raised by llcr code.

    ``exit_code`` is what the `llcr` console script exits with; ``hint`` (optional) is the
    one thing to do about it, printed after the message on the same line.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class CodecError(LlcrError):
    """A message could not be encoded or decoded.

    ``reason`` is a stable, machine-readable code (it becomes a dead letter's
    ``reason_code``); the message says what was wrong in words.
    """

    def __init__(self, reason: CodecReason, message: str) -> None:
        super().__init__(message)
        self.reason: CodecReason = reason


class RejectedInputError(LlcrError, ValueError):
    """One input refused, with a stable machine-readable ``code`` (the reason code of its
    dead letter, rejected row or API answer) and a sentence saying what was wrong.

    Every room's rejection derives from it (bounds, intensity, obligations, signal
    requests), so a caller catches one type and reads one field.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def reason(self) -> str:
        """``"code: sentence"``, the form a dead letter's ``reason`` takes."""
        return f"{self.code}: {self}"


class ConfigError(LlcrError):
    """Settings are missing, malformed or contradictory (exit 2: fix the invocation)."""

    exit_code = 2


class InfrastructureError(LlcrError):
    """A broker, store, library or device could not be found, started or reached (exit 2)."""

    exit_code = 2
