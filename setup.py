"""Build step of archspace (everything else is in pyproject.toml).

The preset and study folders (``spaces/``, ``studies/``) live at the top of the repository,
which stays their source; a wheel carries a copy of them as ``archspace/_bundled/`` so that an
installed archspace finds its presets and studies (see ``archspace/_resources.py``).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = ("spaces", "studies")


class BuildWithPresets(build_py):
    """``build_py``, then copy the YAML files of the bundled folders into the built package."""

    def run(self):
        super().run()
        for name in BUNDLED:
            source = ROOT / name
            if not source.is_dir():
                continue
            target = Path(self.build_lib) / "archspace" / "_bundled" / name
            shutil.rmtree(target, ignore_errors=True)
            for path in sorted(source.rglob("*.yaml")):
                out = target / path.relative_to(source)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, out)


setup(cmdclass={"build_py": BuildWithPresets})
