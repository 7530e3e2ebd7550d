"""The grid zones llcr knows: Electricity Maps zone ids (the vocabulary of every topic).

An agent's zone decides which intensity prices its energy, so a typo (``de``) or an
invented zone must be refused at start, with the closest known ids named, rather than
leave a host unpriced or priced by another grid. Deployments on a zone missing here add
it with the ``extra_zones`` setting.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

_EUROPE = """
AL AT BA BE BG BY CH CY CZ DE DK DK-DK1 DK-DK2 DK-BHM EE ES ES-CE ES-ML ES-IB-MA ES-IB-ME
ES-IB-IZ ES-IB-FO ES-CN-GC ES-CN-TE ES-CN-LZ ES-CN-FV ES-CN-LP ES-CN-HI ES-CN-IG FI FO FR
FR-COR GB GB-NIR GB-ORK GB-SHI GE GR GR-IS HR HU IE IS IT IT-CNO IT-CSO IT-NO IT-SAR IT-SIC
IT-SO LT LU LV MD ME MK MT NL NO NO-NO1 NO-NO2 NO-NO3 NO-NO4 NO-NO5 PL PT PT-AC PT-MA RO RS
SE SE-SE1 SE-SE2 SE-SE3 SE-SE4 SI SK TR UA XK
"""
_NORTH_AMERICA = """
US-AK US-HI US-CAL-BANC US-CAL-CISO US-CAL-IID US-CAL-LDWP US-CAL-TIDC US-CAR-CPLE US-CAR-CPLW
US-CAR-DUK US-CAR-SC US-CAR-SCEG US-CAR-YAD US-CENT-SPA US-CENT-SWPP US-FLA-FMPP US-FLA-FPC
US-FLA-FPL US-FLA-GVL US-FLA-HST US-FLA-JEA US-FLA-SEC US-FLA-TAL US-FLA-TEC US-MIDA-PJM
US-MIDW-AECI US-MIDW-LGEE US-MIDW-MISO US-NE-ISNE US-NW-AVA US-NW-BPAT US-NW-CHPD US-NW-DOPD
US-NW-GCPD US-NW-GRID US-NW-IPCO US-NW-NEVP US-NW-NWMT US-NW-PACE US-NW-PACW US-NW-PGE
US-NW-PSCO US-NW-PSEI US-NW-SCL US-NW-TPWR US-NW-WACM US-NW-WAUW US-NY-NYIS US-SE-SEPA
US-SE-SOCO US-SW-AZPS US-SW-EPE US-SW-PNM US-SW-SRP US-SW-TEPC US-SW-WALC US-TEN-TVA
US-TEX-ERCO CA-AB CA-BC CA-MB CA-NB CA-NL CA-NS CA-NT CA-NU CA-ON CA-PE CA-QC CA-SK CA-YT MX
"""
_REST = """
AR AU-NSW AU-NT AU-QLD AU-SA AU-TAS AU-VIC AU-WA BR-CS BR-N BR-NE BR-S CL-SEN CN CO CR IN-EA
IN-NE IN-NO IN-SO IN-WE IL JP-CB JP-CG JP-HKD JP-HR JP-KN JP-KY JP-ON JP-SK JP-TH JP-TK KR
NZ PE SA SG TW AE UY ZA HK ID MY TH VN PH EG MA KE NG
"""
KNOWN_ZONES: frozenset[str] = frozenset((_EUROPE + _NORTH_AMERICA + _REST).split())

# The same grids in other vocabularies: EIA-930 balancing-authority codes (exact) and
# WattTime regions (a WattTime region is priced by the balancing authority containing it).
# A file or a setting naming one of these is read as the zone; anything else is refused.
EIA_BALANCING_AUTHORITIES: dict[str, str] = {
    "CISO": "US-CAL-CISO", "BANC": "US-CAL-BANC", "LDWP": "US-CAL-LDWP", "IID": "US-CAL-IID",
    "TIDC": "US-CAL-TIDC", "PJM": "US-MIDA-PJM", "ERCO": "US-TEX-ERCO", "NYIS": "US-NY-NYIS",
    "ISNE": "US-NE-ISNE", "MISO": "US-MIDW-MISO", "SWPP": "US-CENT-SWPP", "BPAT": "US-NW-BPAT",
    "TVA": "US-TEN-TVA", "SOCO": "US-SE-SOCO", "DUK": "US-CAR-DUK", "FPL": "US-FLA-FPL",
    "PACE": "US-NW-PACE", "PACW": "US-NW-PACW", "AZPS": "US-SW-AZPS", "SRP": "US-SW-SRP",
}  # fmt: skip
WATTTIME_REGIONS: dict[str, str] = {
    "CAISO_NORTH": "US-CAL-CISO", "CAISO_ESCONDIDO": "US-CAL-CISO", "CAISO_LONGBEACH":
    "US-CAL-CISO", "CAISO_PALMSPRINGS": "US-CAL-CISO", "CAISO_REDDING": "US-CAL-CISO",
    "CAISO_SANBERNARDINO": "US-CAL-CISO", "CAISO_SANDIEGO": "US-CAL-CISO",
    "ERCOT_AUSTIN": "US-TEX-ERCO", "ERCOT_COAST": "US-TEX-ERCO", "ERCOT_EASTTX":
    "US-TEX-ERCO", "ERCOT_HIDALGO": "US-TEX-ERCO", "ERCOT_NORTHCENTRAL": "US-TEX-ERCO",
    "ERCOT_PANHANDLE": "US-TEX-ERCO", "ERCOT_SANANTONIO": "US-TEX-ERCO", "ERCOT_SECOAST":
    "US-TEX-ERCO", "ERCOT_SOUTHTX": "US-TEX-ERCO", "ERCOT_WESTTX": "US-TEX-ERCO",
    "NYISO_NYC": "US-NY-NYIS", "NYISO_LONGIL": "US-NY-NYIS", "NYISO_HUDVL": "US-NY-NYIS",
    "ISONE_CT": "US-NE-ISNE", "ISONE_ME": "US-NE-ISNE", "ISONE_NEMA": "US-NE-ISNE",
    "ISONE_NH": "US-NE-ISNE", "ISONE_RI": "US-NE-ISNE", "ISONE_SEMA": "US-NE-ISNE",
    "ISONE_VT": "US-NE-ISNE", "ISONE_WCMA": "US-NE-ISNE", "PJM_DC": "US-MIDA-PJM",
    "PJM_NJ": "US-MIDA-PJM", "PJM_CHICAGO": "US-MIDA-PJM", "PJM_ROANOKE": "US-MIDA-PJM",
    "PJM_SOUTHWEST_OH": "US-MIDA-PJM", "PJM_EASTERN_KY": "US-MIDA-PJM", "BPA": "US-NW-BPAT",
    "SPP_KANSAS": "US-CENT-SWPP", "SPP_TX": "US-CENT-SWPP", "TVA": "US-TEN-TVA",
}  # fmt: skip
ZONE_ALIASES: dict[str, str] = {**WATTTIME_REGIONS, **EIA_BALANCING_AUTHORITIES}


def canonical_zone(name: str) -> str:
    """The zone id a name in another vocabulary means (EIA BA code, WattTime region), else
    ``name`` unchanged (its check comes after)."""
    return name if name in KNOWN_ZONES else ZONE_ALIASES.get(name, name)


_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_zone(zone: str, extra: Iterable[str] = ()) -> str:
    """``zone`` when it is a known zone id; ValueError naming the closest ones otherwise."""
    known = KNOWN_ZONES | set(extra)
    if zone in known:
        return zone
    if zone in ZONE_ALIASES:
        return ZONE_ALIASES[zone]
    close = difflib.get_close_matches(zone.upper(), sorted(known), n=4, cutoff=0.6)
    near = f"; did you mean {', '.join(close)}?" if close else ""
    regions = sorted({z.split("-")[0] for z in known})
    raise ValueError(
        f"{zone!r} is not a known grid zone (Electricity Maps zone id, case-sensitive, or an "
        f"EIA balancing authority or WattTime region llcr maps to one){near} "
        f"Known zones start with: {' '.join(regions)}; `llcr zones` lists them all, and the "
        "extra_zones setting adds one"
    )


def check_site(site: str) -> str:
    """A site name: 1-64 letters, digits, '.', '_' or '-' (it keys PUE and capture units)."""
    if not _SITE.match(site):
        raise ValueError(f"site {site!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return site
