"""Spec paths: ``stages[2].depth`` ⇄ ``("stages", 2, "depth")``, and get / set on plain data.

The same path syntax names a problem in an error message, a ``--set`` override on the
command line and a choice in a design space.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Sequence

Key = str | int
ALL = "*"  # ``stages[*].act``: every item of a list (in set_path)
_SEGMENT = re.compile(r"(?:^|\.)([A-Za-z_][A-Za-z0-9_]*)|\[(-?\d+|\*)\]")


def parse_path(text: str) -> tuple[Key, ...]:
    """Split ``stages[2].depth`` into ``("stages", 2, "depth")``.

    Raises:
        ValueError: if the text is not a well-formed path.
    """
    keys: list[Key] = []
    pos = 0
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        if m is None or (pos == 0 and text.startswith(".")):
            raise ValueError(f"malformed path {text!r} (expected e.g. stages[2].depth)")
        if m.group(1) is not None:
            keys.append(m.group(1))
        else:
            keys.append(ALL if m.group(2) == ALL else int(m.group(2)))
        pos = m.end()
    if not keys or not isinstance(keys[0], str):
        raise ValueError(f"malformed path {text!r} (expected e.g. stages[2].depth)")
    return tuple(keys)


def format_path(keys: Sequence[Key]) -> str:
    """Join ``("stages", 2, "depth")`` into ``stages[2].depth``."""
    out = []
    for k in keys:
        if isinstance(k, int) or k == ALL:
            out.append(f"[{k}]")
        else:
            out.append(f".{k}" if out else str(k))
    return "".join(out)


def get_path(data: Any, keys: Sequence[Key]) -> Any:
    """The value at ``keys`` in nested dicts and lists.

    Raises:
        KeyError: naming the first part of the path that does not exist.
    """
    node = data
    for i, k in enumerate(keys):
        node = _step(node, k, keys[: i + 1], create=False)
    return node


def set_path(data: dict, keys: Sequence[Key], value: Any) -> None:
    """Set ``value`` at ``keys``, creating missing mapping keys (not list items).

    A ``[*]`` segment sets the rest of the path in every item of that list.

    Raises:
        KeyError: naming the part of the path that cannot be reached.
    """
    node = data
    for i, k in enumerate(keys[:-1]):
        if k == ALL:
            if not isinstance(node, list):
                raise KeyError(f"{format_path(keys[:i]) or 'spec'} is not a list")
            for item in node:
                set_path(item, keys[i + 1:], copy.deepcopy(value))
            return
        node = _step(node, k, keys[: i + 1], create=True)
    last = keys[-1]
    if last == ALL:
        if not isinstance(node, list):
            raise KeyError(f"{format_path(keys[:-1]) or 'spec'} is not a list")
        node[:] = [copy.deepcopy(value) for _ in node]
        return
    if isinstance(last, int):
        if not isinstance(node, list) or not -len(node) <= last < len(node):
            raise KeyError(_missing(keys, node))
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise KeyError(f"{format_path(keys[:-1])} is not a mapping")


def _step(node: Any, key: Key, upto: Sequence[Key], create: bool) -> Any:
    if isinstance(key, int):
        if isinstance(node, list) and -len(node) <= key < len(node):
            return node[key]
        raise KeyError(_missing(upto, node))
    if isinstance(node, dict):
        if key not in node:
            if not create:
                raise KeyError(f"{format_path(upto)} does not exist")
            node[key] = {}
        return node[key]
    raise KeyError(f"{format_path(upto[:-1])} is not a mapping")


def _missing(keys: Sequence[Key], node: Any) -> str:
    if isinstance(node, list):
        return f"{format_path(keys)} is out of range ({len(node)} items)"
    return f"{format_path(keys[:-1]) or 'spec'} is not a list"
