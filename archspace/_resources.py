"""Where the preset (``spaces/``) and study (``studies/``) folders are.

The repository's folders are the source. A wheel carries a copy of them inside the package
(``archspace/_bundled/``, written by the build step in ``setup.py``), so that an installed
archspace finds ``coatnet-0`` and ``quickstart`` without the repository; a source checkout or
an editable install reads the repository's folders.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
FOLDERS = ("spaces", "studies")


def resource_dir(kind: str) -> Path | None:
    """The ``spaces`` or ``studies`` folder: the copy shipped in the package, else the
    repository's; ``None`` if neither exists."""
    if kind not in FOLDERS:
        raise ValueError(f"unknown resource folder {kind!r}")
    for folder in (PACKAGE / "_bundled" / kind, PACKAGE.parent / kind):
        if folder.is_dir():
            return folder
    return None
