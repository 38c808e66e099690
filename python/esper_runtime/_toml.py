"""A run config given as a dict, written out as TOML for the runtime to read.

Only what a run config holds: tables (dicts), arrays of tables (lists of dicts), and
strings, integers, floats, booleans and arrays of them. A value TOML cannot hold (None,
another type) is refused with a ``TypeError`` naming its key.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

__all__ = ["dumps"]


def _key(key: object, where: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"config key {where}{key!r}: keys are strings")
    bare = key != "" and all(c.isalnum() and c.isascii() or c in "-_" for c in key)
    return key if bare else json.dumps(key, ensure_ascii=False)


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # A JSON string with no escapes TOML lacks: \uXXXX is TOML's too.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, Mapping):
        items = (f"{_key(k, where)} = {_value(v, f'{where}.{k}')}" for k, v in value.items())
        return "{ " + ", ".join(items) + " }"
    raise TypeError(f"config key {where}: {type(value).__name__} {value!r} has no TOML form (leave the key out)")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, Mapping) for v in value)


def _table(table: Mapping[str, Any], path: list[str], out: list[str]) -> None:
    plain = [(k, v) for k, v in table.items() if not isinstance(v, Mapping) and not _is_table_array(v)]
    where = ".".join(path) + "." if path else ""
    for k, v in plain:
        out.append(f"{_key(k, where)} = {_value(v, where + str(k))}")
    for k, v in table.items():
        sub = path + [_key(k, where)]
        if isinstance(v, Mapping):
            out.append(f"\n[{'.'.join(sub)}]")
            _table(v, sub, out)
        elif _is_table_array(v):
            for item in v:
                out.append(f"\n[[{'.'.join(sub)}]]")
                _table(item, sub, out)


def dumps(config: Mapping[str, Any]) -> str:
    """``config`` as TOML text."""
    out: list[str] = []
    _table(config, [], out)
    return "\n".join(out) + "\n"
