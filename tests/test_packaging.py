"""A built wheel carries the presets and studies: an installed archspace (not the source tree)
finds coatnet-0 and the quickstart study."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "archspace", "spaces", "studies")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the source tree, unpacked as site-packages would hold it."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                        "-w", str(tmp / "dist")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp / "dist").glob("archspace-*.whl")
    site = tmp / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site, wheel


def test_wheel_holds_every_preset_and_study(installed):
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("spaces", "studies"):
        for path in (ROOT / folder).rglob("*.yaml"):
            assert f"archspace/_bundled/{folder}/{path.relative_to(ROOT / folder).as_posix()}" in names


def test_installed_package_finds_presets_and_studies(installed, tmp_path):
    site, _ = installed
    code = (
        "import json, archspace\n"
        "from archspace.search.study import load_study\n"
        "spec = archspace.load_spec('coatnet-0')\n"
        "study = load_study('quickstart')\n"
        "print(json.dumps({'file': archspace.__file__, 'spec': spec.name, 'study': study.name,\n"
        "                  'timm': 'coatnet-0-timm' in archspace.list_models('coatnet-*')}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    assert Path(found["file"]).is_relative_to(site)  # the installed copy, not the source tree
    assert found == {**found, "spec": "coatnet-0", "study": "quickstart", "timm": True}
