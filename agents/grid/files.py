"""Intensity files: Electricity Maps data-portal exports and a generic CSV (pure parsing).

**Electricity Maps portal** (hourly, as downloaded; header ``Datetime (UTC),Country,
Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA),
Low Carbon Percentage,Renewable Percentage,Data Source,Data Estimated,Data Estimation
Method``): each row is the hour starting at ``Datetime (UTC)`` and gives two average
observations, ``direct`` and ``lifecycle``. ``Data Estimated`` true makes them
``estimated`` with the file's estimation method.

**Generic** (docs/grid-feeder.md): ``zone,period_start,period_end,value,signal`` and
optionally ``variant`` (direct), ``kind`` (measured), ``provider``, ``estimation_method``.
Times are epoch milliseconds or ISO-8601 with an offset (``Z``, ``+02:00``). A naive time
(no offset) is ambiguous: the file is refused, naming the line, unless the caller names
the offset its local times have (``utc_offset_min``); it was once read as UTC without a
word, shifting hours by the local offset.

Rows that cannot be read become :class:`Problem` s naming the line; validation of the
values (negative, NaN, ceiling, duplicates, gaps) happens in ``validate``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import cast

from agents.grid.model import Observation, Problem
from schemas.clock import parse_time_ms
from schemas.errors import ConfigError
from schemas.records import IntensityKind, Signal, Variant
from schemas.units import HOUR_MS
from schemas.zones import canonical_zone

EM_TIME = "Datetime (UTC)"
EM_ZONE = "Zone Id"
EM_DIRECT = "Carbon Intensity gCO₂eq/kWh (direct)"
EM_LCA = "Carbon Intensity gCO₂eq/kWh (LCA)"
EM_ESTIMATED = "Data Estimated"
EM_METHOD = "Data Estimation Method"
_PORTAL_VARIANTS: tuple[tuple[Variant, str], ...] = (("direct", EM_DIRECT), ("lifecycle", EM_LCA))
GENERIC = ("zone", "period_start", "period_end", "value", "signal")


class IntensityFileError(ConfigError, ValueError):
    """A whole file cannot be read as intensity (its format, its times): refused at start."""


def _file_time_ms(text: str, utc_offset_min: int | None) -> int:
    """Epoch ms of a generic file's time; a naive ISO time needs ``utc_offset_min``."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        return round(moment.timestamp() * 1000)
    if utc_offset_min is None:
        raise IntensityFileError(
            f"naive time {text!r} (no UTC offset): write it with Z or +hh:mm, or name the "
            "offset of the file's local times (--utc-offset +hh:mm)"
        )
    return parse_time_ms(text) - utc_offset_min * 60_000


def parse_utc_offset(text: str) -> int:
    """Minutes of ``+hh:mm`` / ``-hh:mm`` (or whole minutes), for ``utc_offset_min``."""
    value = text.strip()
    try:
        if ":" in value:
            sign = -1 if value.startswith("-") else 1
            hours, minutes = value.lstrip("+-").split(":")
            total = sign * (int(hours) * 60 + int(minutes))
        else:
            total = int(value)
    except ValueError:
        raise IntensityFileError(f"UTC offset {text!r} is not +hh:mm") from None
    if abs(total) > 14 * 60:
        raise IntensityFileError(f"UTC offset {text!r} is beyond ±14:00")
    return total


def _value(text: str) -> float:
    if not text.strip():
        raise ValueError("empty value")
    return float(text)  # "NaN" parses; validation rejects it with its own reason


def read_intensity_csv(
    lines: Iterable[str], name: str, utc_offset_min: int | None = None
) -> tuple[list[Observation], list[Problem]]:
    """Observations and unreadable rows of a portal or generic file called ``name``;
    :class:`IntensityFileError` for a file it cannot read at all (format, naive times)."""
    reader = csv.reader(lines)
    header = [h.strip() for h in next(reader, [])]
    if EM_TIME in header and EM_DIRECT in header:
        parse_row = _portal_row
    elif all(column in header for column in GENERIC):
        parse_row = partial(_generic_row, utc_offset_min=utc_offset_min)
    else:
        raise IntensityFileError(
            f"{name}: not an Electricity Maps portal export nor a generic intensity CSV "
            f"(header {header[:6]})"
        )
    provider = f"csv:{name}"
    observations: list[Observation] = []
    problems: list[Problem] = []
    for line_no, values in enumerate(reader, start=2):
        if not values or not any(v.strip() for v in values):
            continue
        raw = ",".join(values)
        if len(values) != len(header):
            reason = f"{name} line {line_no}: {len(values)} columns, the header has {len(header)}"
            problems.append(Problem("bad_row", reason, raw))
            continue
        row = dict(zip(header, values, strict=True))
        try:
            observations.extend(parse_row(row, provider, raw))
        except IntensityFileError as exc:
            raise IntensityFileError(f"{name} line {line_no}: {exc}") from None
        except (ValueError, KeyError) as exc:
            problems.append(Problem("bad_row", f"{name} line {line_no}: {exc}", raw))
    return observations, problems


def _portal_row(row: dict[str, str], provider: str, raw: str) -> list[Observation]:
    start = parse_time_ms(row[EM_TIME])
    estimated = row.get(EM_ESTIMATED, "").strip().lower() == "true"
    kind: IntensityKind = "estimated" if estimated else "measured"
    method = row.get(EM_METHOD, "").strip() or None
    return [
        Observation(
            zone=row[EM_ZONE].strip(),
            start_ms=start,
            end_ms=start + HOUR_MS,
            value=_value(row[column]),
            signal="average",
            variant=variant,
            provider=provider,
            kind=kind,
            estimation_method=method if estimated else None,
            raw=raw,
        )
        for variant, column in _PORTAL_VARIANTS
        if column in row
    ]


def _choice(text: str, allowed: tuple[str, ...], what: str) -> str:
    value = text.strip()
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return value


def _generic_row(
    row: dict[str, str], provider: str, raw: str, *, utc_offset_min: int | None
) -> list[Observation]:
    signal = cast(Signal, _choice(row["signal"], ("average", "marginal"), "signal"))
    variant = cast(
        Variant, _choice(row.get("variant") or "direct", ("direct", "lifecycle"), "variant")
    )
    kind = cast(
        IntensityKind,
        _choice(row.get("kind") or "measured", ("measured", "estimated", "forecast"), "kind"),
    )
    return [
        Observation(
            zone=canonical_zone(row["zone"].strip()),  # a WattTime/EIA name: its zone
            start_ms=_file_time_ms(row["period_start"], utc_offset_min),
            end_ms=_file_time_ms(row["period_end"], utc_offset_min),
            value=_value(row["value"]),
            signal=signal,
            variant=variant,
            provider=row.get("provider", "").strip() or provider,
            kind=kind,
            estimation_method=row.get("estimation_method", "").strip() or None,
            raw=raw,
        )
    ]
