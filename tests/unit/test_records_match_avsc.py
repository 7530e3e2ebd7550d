"""The TypedDicts in schemas.records match the .avsc files field by field."""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal, NotRequired, Union, get_args, get_origin, get_type_hints

import pytest

from schemas.codec import SCHEMA_NAMES, schema_text
from schemas.records import RECORD_TYPES

_PRIMITIVES = {
    "string": str,
    "long": int,
    "int": int,
    "double": float,
    "float": float,
    "boolean": bool,
    "bytes": bytes,
}


def _check(avro: Any, hint: Any, where: str, named: dict[str, Any]) -> None:
    if isinstance(avro, str) and avro in _PRIMITIVES:
        assert hint is _PRIMITIVES[avro], f"{where}: {avro} vs {hint}"
    elif isinstance(avro, str):  # a reference to a named type defined earlier
        _check(named[avro.rsplit(".", 1)[-1]], hint, where, named)
    elif isinstance(avro, list):
        assert avro[0] == "null", f"{where}: unions must be ['null', T]"
        args = get_args(hint)
        assert get_origin(hint) in (Union, types.UnionType) and type(None) in args, where
        (inner,) = [a for a in args if a is not type(None)]
        _check(avro[1], inner, where, named)
    elif avro["type"] == "enum":
        named[avro["name"]] = avro
        assert get_origin(hint) is Literal, f"{where}: enum needs a Literal"
        assert list(get_args(hint)) == avro["symbols"], f"{where}: symbols differ"
    elif avro["type"] == "array":
        assert get_origin(hint) is list, where
        _check(avro["items"], get_args(hint)[0], f"{where}[]", named)
    elif avro["type"] == "record":
        named[avro["name"]] = avro
        _check_record(avro, hint, where, named)
    else:
        _check(avro["type"], hint, where, named)


def _check_record(avro: dict[str, Any], typed: Any, where: str, named: dict[str, Any]) -> None:
    hints = get_type_hints(typed, include_extras=True)
    assert [f["name"] for f in avro["fields"]] == list(hints), f"{where}: field names/order differ"
    for field in avro["fields"]:
        hint = hints[field["name"]]
        optional = get_origin(hint) is NotRequired
        assert optional == ("default" in field), f"{where}.{field['name']}: default vs NotRequired"
        _check(
            field["type"],
            get_args(hint)[0] if optional else hint,
            f"{where}.{field['name']}",
            named,
        )


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_typed_record_matches_avsc(name: str) -> None:
    _check_record(json.loads(schema_text(name)), RECORD_TYPES[name], name, {})


def test_checker_catches_a_mismatch() -> None:
    class Wrong(typing.TypedDict):
        zone: int

    with pytest.raises(AssertionError):
        _check_record(
            {"name": "X", "type": "record", "fields": [{"name": "zone", "type": "string"}]},
            Wrong,
            "X",
            {},
        )
