"""A run configuration written back as TOML: every key with its value, each section headed by its docstring.

``dlrm-scale config`` prints it, so a user sees every knob a preset leaves at its default and can start a file of
their own from it; loading the text back with :func:`~dlrm_scale.config.load_config` gives the same
:class:`~dlrm_scale.config.Config` (the tests check the round trip for every preset). TOML has no null: an unset
optional value (``None``) is written as a commented line, which loads back as the default ``None``.

Example::

    print(to_toml(load_config("criteo_terabyte", ["train.batch_size=4096"])))
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from dlrm_scale.config import Config

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _value(value: Any, where: str) -> str:
    """One TOML value (inline tables for dicts inside lists)."""
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
        return json.dumps(value)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item, where) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(v, where)}" for k, v in value.items()) + "}"
    raise TypeError(f"{where}: cannot write a {type(value).__name__} ({value!r}) as TOML")


def _comment(text: str) -> list[str]:
    """A docstring as comment lines (its first paragraph: what the section is for)."""
    paragraph = text.strip().split("\n\n")[0]
    return [f"# {' '.join(line.split())}".rstrip() for line in paragraph.splitlines() if line.strip()]


def _section(path: list[str], node: Any, doc: str | None, out: list[str]) -> None:
    """Writes table ``path`` (a dataclass or a plain dict): its plain values, then its sub-tables."""
    if dataclasses.is_dataclass(node):
        items = [(f.name, getattr(node, f.name)) for f in dataclasses.fields(node)]
    else:
        items = list(node.items())
    plain = [(k, v) for k, v in items if not (dataclasses.is_dataclass(v) or isinstance(v, dict))]
    tables = [(k, v) for k, v in items if dataclasses.is_dataclass(v) or isinstance(v, dict)]
    if path and (plain or not tables):
        out.append("")
        out.extend(_comment(doc) if doc else [])
        out.append(f"[{'.'.join(_key(p) for p in path)}]")
        for name, value in plain:
            where = ".".join([*path, name])
            out.append(f"# {_key(name)} = (not set)" if value is None else f"{_key(name)} = {_value(value, where)}")
    for name, value in tables:
        child_doc = type(value).__doc__ if dataclasses.is_dataclass(value) else None
        _section([*path, str(name)], value, child_doc, out)


def to_toml(cfg: Config, *, header: str = "") -> str:
    """``cfg`` as a TOML document (``header``: comment lines put first, e.g. where it came from)."""
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    _section([], cfg, None, out)
    return "\n".join(out).lstrip("\n") + "\n"
