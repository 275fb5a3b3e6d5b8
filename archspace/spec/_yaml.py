"""Bounded YAML reading: file size, text encoding, nesting depth and expanded size are checked
before any Python object is built, so that no input file can exhaust the memory or the stack.

The bounds (also listed in docs/spec-language.md):

* a file holds at most :data:`MAX_FILE_BYTES` bytes of UTF-8 text;
* collections nest at most :data:`MAX_NESTING` levels deep;
* the document expands to at most :data:`MAX_NODES` values, an alias counted at the full size
  of what it refers to (so an alias bomb is refused before it is expanded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError

MAX_FILE_BYTES = 4 * 2**20
MAX_NESTING = 64
MAX_NODES = 200_000
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def read_text(path: Path, what: str = "") -> str:
    """The UTF-8 text of ``path`` (a UTF-8 byte-order mark is dropped), at most :data:`MAX_FILE_BYTES`.

    Raises:
        SpecError: unreadable, too large, or not UTF-8 text (one problem on ``what``).
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError.single(what, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError.single(what, f"{path} is larger than {MAX_FILE_BYTES // 2**20} MiB, the most a spec or "
                                     f"study file may hold")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError.single(what, f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                                     f"{exc.start})") from None


def parse_yaml(text: str, where: str, what: str = "") -> Any:
    """Parse YAML ``text`` (named ``where`` in messages) after checking its nesting and size.

    Raises:
        SpecError: a bound is exceeded (one problem on ``what``).
        yaml.YAMLError: malformed YAML.
    """
    _check_shape(text, where, what)
    return yaml.load(text, Loader=LOADER)


def _check_shape(text: str, where: str, what: str) -> None:
    """Walk the event stream once (the parser keeps its own stack, so depth costs no recursion)."""
    sizes: dict[str, int] = {}  # expanded size of each anchored node
    stack: list[list] = []  # [anchor, expanded size so far] of each open collection
    total = 0
    for event in yaml.parse(text, Loader=LOADER):
        if isinstance(event, _OPEN):
            stack.append([event.anchor, 1])
            if len(stack) > MAX_NESTING:
                raise SpecError.single(what, f"{where} nests collections deeper than {MAX_NESTING} levels "
                                             f"(at line {event.start_mark.line + 1})")
            total += 1
            continue
        if isinstance(event, _CLOSE):
            anchor, size = stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
            total += 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, size = None, sizes.get(event.anchor, 1)
            total += size
        else:
            continue
        if anchor is not None:
            sizes[anchor] = size
        if stack:
            stack[-1][1] += size
        if total > MAX_NODES:
            raise SpecError.single(what, f"{where} expands to more than {MAX_NODES:,} values (aliases counted "
                                         f"at the size of what they repeat)")
