"""The JSON Schemas (Draft 2020-12) of the FIXED contracts, shipped as data in ``streams/schemas``.

They are what exchanges, analysts and other tools validate against; the code's own validation
lives in :mod:`streams.contracts` and ``tests/test_schemas.py`` keeps the two in agreement.
``trades-message`` refers to ``trade`` by ``$ref``, so validate it with :func:`schema_registry`.

>>> load_schema("halt")["properties"]["state"]["enum"]
['TRADING', 'HALTED', 'PAUSED', 'QUOTE_ONLY']
>>> sorted(load_schema("trade")["required"])[:3]
['buyer', 'instrument', 'price']
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from referencing import Registry

__all__ = ["SCHEMA_NAMES", "load_schema", "schema_registry"]

#: Every schema, by name; the file is ``streams/schemas/<name>.schema.json``.
SCHEMA_NAMES: Final = (
    "trade",
    "trades-message",
    "agent",
    "alert",
    "halt",
    "bar",
    "dlq",
    "label",
)


@cache
def _text(name: str) -> str:
    return files("streams").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """The schema called ``name`` (one of :data:`SCHEMA_NAMES`), as a fresh dict.

    Parameters
    ----------
    name
        Schema name without suffix, e.g. ``"trade"`` or ``"trades-message"``.

    Raises
    ------
    KeyError
        If there is no schema of that name.
    """
    if name not in SCHEMA_NAMES:
        raise KeyError(f"no schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    schema: dict[str, Any] = json.loads(_text(name))
    return schema


def schema_registry() -> Registry[Any]:
    """A ``referencing`` registry holding every schema under its ``$id`` (for ``$ref``).

    >>> from jsonschema import Draft202012Validator
    >>> v = Draft202012Validator(load_schema("trades-message"), registry=schema_registry())
    >>> v.is_valid([{"ts": 1.7e9, "trade_id": "t", "instrument": "I", "price": 1, "qty": 1,
    ...              "buyer": "a", "seller": "b"}]), v.is_valid([{"trade_id": "t"}])
    (True, False)
    """
    from referencing import Registry, Resource

    resources = [(s["$id"], Resource.from_contents(s)) for s in map(load_schema, SCHEMA_NAMES)]
    registry: Registry[Any] = Registry().with_resources(resources)
    return registry
