"""Intensity providers behind one seam: ``serves(zone)`` and ``fetch(zone, now_ms)``.

Each turns the provider's documented JSON into :class:`Observation` s. Items that cannot
be read are :class:`Problem` s, and validation happens later in one place. Base URLs are
settings, so tests point them at HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.grid.http import ApiClient, AuthError, ProviderError
from agents.grid.model import Observation, Problem, iso
from schemas.clock import parse_time_ms
from schemas.records import IntensityKind, Signal, Variant
from schemas.units import HOUR_MS

LBS_PER_MWH_IN_G_PER_KWH = 0.45359237  # 1 lb = 453.59237 g; per MWh = per 1000 kWh


@dataclass
class Fetched:
    observations: list[Observation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class Provider(Protocol):
    name: str
    signal: Signal

    def serves(self, zone: str) -> bool: ...

    def fetch(self, zone: str, now_ms: int) -> Fetched: ...


def _number(value: Any) -> float:
    """A JSON number; null and non-numbers become NaN, which validation rejects."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _collect(
    provider: str, items: list[Any], zone: str, out: Fetched, build: Callable[[Any], Observation]
) -> None:
    """Build one observation per item; an item that cannot be read becomes a Problem."""
    for item in items:
        try:
            out.observations.append(build(item))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            out.problems.append(Problem("bad_row", f"{provider}: item {exc!r}", repr(item), zone))


def _items(body: Any, key: str, provider: str) -> list[Any]:
    items = body.get(key) if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ProviderError(provider, "bad_response", f"response has no '{key}' list")
    return items


class ElectricityMaps:
    """Electricity Maps API v3, average signal, direct and lifecycle.

    https://static.electricitymaps.com/api/docs/index.html
      GET /v3/carbon-intensity/history?zone=DE&emissionFactorType=direct   (past 24 h)
      GET /v3/carbon-intensity/forecast?zone=DE&emissionFactorType=direct
      header ``auth-token: <token>``. Items: ``{"zone", "carbonIntensity", "datetime",
      "updatedAt", "createdAt", "emissionFactorType", "isEstimated",
      "estimationMethod"}``; forecast items have ``carbonIntensity`` and ``datetime``.
    Hourly periods start at ``datetime``. A past hour whose value the provider later
    updates comes back changed in ``history``, and becomes a new revision.
    """

    name = "electricitymaps"
    signal: Signal = "average"

    def __init__(
        self,
        api: ApiClient,
        token: str,
        base_url: str = "https://api.electricitymap.org",
        variants: tuple[Variant, ...] = ("direct", "lifecycle"),
        forecast: bool = True,
    ) -> None:
        self._api = api
        self._headers = {"auth-token": token}
        self._base = base_url.rstrip("/")
        self._variants = variants
        self._forecast = forecast

    def serves(self, zone: str) -> bool:
        return True

    def fetch(self, zone: str, now_ms: int) -> Fetched:
        out = Fetched()
        for variant in self._variants:
            factor = {"direct": "direct", "lifecycle": "lifecycle"}[variant]
            params = {"zone": zone, "emissionFactorType": factor}
            history = self._api.get_json(
                f"{self._base}/v3/carbon-intensity/history", params=params, headers=self._headers
            )
            self._read(_items(history, "history", self.name), zone, variant, None, out)
            if self._forecast:
                forecast = self._api.get_json(
                    f"{self._base}/v3/carbon-intensity/forecast",
                    params=params,
                    headers=self._headers,
                )
                self._read(_items(forecast, "forecast", self.name), zone, variant, "forecast", out)
        return out

    def _read(
        self,
        items: list[Any],
        zone: str,
        variant: Variant,
        kind: IntensityKind | None,
        out: Fetched,
    ) -> None:
        def build(item: Any) -> Observation:
            start = parse_time_ms(item["datetime"])
            estimated = bool(item.get("isEstimated"))
            return Observation(
                zone=item.get("zone", zone),
                start_ms=start,
                end_ms=start + HOUR_MS,
                value=_number(item.get("carbonIntensity")),
                signal="average",
                variant=variant,
                provider=self.name,
                kind=kind or ("estimated" if estimated else "measured"),
                estimation_method=item.get("estimationMethod") if estimated else None,
                raw=repr(item),
            )

        _collect(self.name, items, zone, out, build)


class WattTime:
    """WattTime API v3 (https://docs.watttime.org/).

    GET /login with HTTP basic auth -> ``{"token": ...}``, a bearer token valid 30 minutes.
    GET /v3/historical?region=..&signal_type=..&start=..&end=..  and
    GET /v3/forecast?region=..&signal_type=.. -> ``{"data": [{"point_time", "value"}],
    "meta": {"data_point_period_seconds": 300, "units": "lbs_co2_per_mwh", ...}}``.
    ``co2_moer`` is the marginal signal, ``co2_aoer`` the average (historical only). The
    values are converted from lbs/MWh to g/kWh. Zones map to WattTime regions by setting,
    and a zone without a region is not served. WattTime allows 3,000 requests per 5
    minutes; a poll makes two per zone.
    """

    name = "watttime"

    def __init__(
        self,
        api: ApiClient,
        *,
        username: str,
        password: str,
        regions: Mapping[str, str],
        signal: Signal = "marginal",
        base_url: str = "https://api.watttime.org",
        forecast: bool = True,
    ) -> None:
        self._api = api
        self._basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._regions = dict(regions)
        self.signal = signal
        self._signal_type = "co2_moer" if signal == "marginal" else "co2_aoer"
        self._base = base_url.rstrip("/")
        self._forecast = forecast and signal == "marginal"
        self._token: str | None = None
        self._token_until = 0.0

    def serves(self, zone: str) -> bool:
        return zone in self._regions

    def _bearer(self, refresh: bool = False) -> dict[str, str]:
        if refresh or self._token is None or time.monotonic() >= self._token_until:
            body = self._api.get_json(
                f"{self._base}/login", headers={"Authorization": f"Basic {self._basic}"}
            )
            token = body.get("token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise AuthError(self.name, "login returned no token")
            self._token, self._token_until = token, time.monotonic() + 25 * 60
        return {"Authorization": f"Bearer {self._token}"}

    def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            return self._api.get_json(f"{self._base}{path}", params=params, headers=self._bearer())
        except AuthError:  # an expired token: log in again once
            return self._api.get_json(
                f"{self._base}{path}", params=params, headers=self._bearer(refresh=True)
            )

    def fetch(self, zone: str, now_ms: int) -> Fetched:
        region = self._regions[zone]
        out = Fetched()
        params = {"region": region, "signal_type": self._signal_type}
        past = {**params, "start": iso(now_ms - HOUR_MS), "end": iso(now_ms)}
        self._read(self._get("/v3/historical", past), zone, "measured", out)
        if self._forecast:
            self._read(self._get("/v3/forecast", params), zone, "forecast", out)
        return out

    def _read(self, body: Any, zone: str, kind: IntensityKind, out: Fetched) -> None:
        meta = body.get("meta") if isinstance(body, dict) else None
        if not isinstance(meta, dict):
            raise ProviderError(self.name, "bad_response", "response has no 'meta'")
        units = meta.get("units")
        if units != "lbs_co2_per_mwh":
            raise ProviderError(self.name, "bad_response", f"unexpected units {units!r}")
        period_ms = int(meta.get("data_point_period_seconds", 300)) * 1000

        def build(item: Any) -> Observation:
            start = parse_time_ms(item["point_time"])
            return Observation(
                zone=zone,
                start_ms=start,
                end_ms=start + period_ms,
                value=_number(item.get("value")) * LBS_PER_MWH_IN_G_PER_KWH,
                signal=self.signal,
                variant="direct",
                provider=self.name,
                kind=kind,
                raw=repr(item),
            )

        _collect(self.name, _items(body, "data", self.name), zone, out, build)


class Neso:
    """UK NESO Carbon Intensity API, no key (https://carbon-intensity.github.io/api-definitions/).

    GET /intensity/{from}/pt24h (the 24 h before) and /intensity/{from}/fw24h (after) ->
    ``{"data": [{"from": "2018-01-20T12:00Z", "to": "2018-01-20T12:30Z",
    "intensity": {"forecast": 266, "actual": 263, "index": "moderate"}}]}``. Half-hourly,
    national (zone GB), operational (direct) emissions. ``actual`` when present is
    measured, otherwise the forecast.
    """

    name = "neso"
    signal: Signal = "average"

    def __init__(
        self, api: ApiClient, base_url: str = "https://api.carbonintensity.org.uk"
    ) -> None:
        self._api = api
        self._base = base_url.rstrip("/")

    def serves(self, zone: str) -> bool:
        return zone == "GB"

    def fetch(self, zone: str, now_ms: int) -> Fetched:
        out = Fetched()
        for span in ("pt24h", "fw24h"):
            body = self._api.get_json(f"{self._base}/intensity/{iso(now_ms)}/{span}")
            _collect(self.name, _items(body, "data", self.name), zone, out, self._build(zone))
        return out

    def _build(self, zone: str) -> Callable[[Any], Observation]:
        def build(item: Any) -> Observation:
            intensity = item["intensity"]
            actual = intensity.get("actual")
            return Observation(
                zone=zone,
                start_ms=parse_time_ms(item["from"]),
                end_ms=parse_time_ms(item["to"]),
                value=_number(intensity.get("forecast") if actual is None else actual),
                signal="average",
                variant="direct",
                provider=self.name,
                kind="forecast" if actual is None else "measured",
                raw=repr(item),
            )

        return build


class Static:
    """The last resort: a configured value per zone for the current hour, estimated."""

    name = "static"
    signal: Signal = "average"

    def __init__(self, values: Mapping[str, float]) -> None:
        self._values = dict(values)

    def serves(self, zone: str) -> bool:
        return zone in self._values

    def fetch(self, zone: str, now_ms: int) -> Fetched:
        start = now_ms - now_ms % HOUR_MS
        return Fetched(
            [
                Observation(
                    zone=zone,
                    start_ms=start,
                    end_ms=start + HOUR_MS,
                    value=self._values[zone],
                    signal="average",
                    variant="direct",
                    provider=self.name,
                    kind="estimated",
                    estimation_method="static configuration",
                )
            ]
        )
