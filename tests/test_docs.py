"""Generated docs stay in step with the code."""

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_spec_reference_is_current():
    result = subprocess.run([sys.executable, "docs/gen_spec_reference.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_model_pages_are_current():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import gen_model_pages
    finally:
        sys.path.pop(0)
    from archspace.papers import comparisons

    groups = defaultdict(list)
    for c in comparisons():
        groups[c.family].append(c)
    for family, rows in groups.items():
        page = (ROOT / "docs" / f"models-{family}.md").read_text()
        assert page == gen_model_pages.page(family, rows), f"run python docs/gen_model_pages.py ({family})"


def test_study_pages_are_current():
    result = subprocess.run([sys.executable, "docs/gen_study_pages.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
