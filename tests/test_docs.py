"""The front door: README, docs/ and scripts/ say only what is true of the repository.

Every `scripts/...` path a document, script or module names exists; the studies each say the question
they answer.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT_PATH = re.compile(r"scripts/[\w/]+\.(?:py|sh)")


def _texts() -> list[Path]:
    """The files whose text may name a script: documents, scripts, the packages, the tests."""
    files = [REPO / "README.md", REPO / "PERFORMANCE.md", *sorted((REPO / "docs").glob("*.md"))]
    for folder in ("scripts", "extract", "classify", "features", "tests"):
        files += sorted(p for p in (REPO / folder).rglob("*") if p.suffix in {".py", ".sh", ".md"})
    return [f for f in files if f.is_file()]


def test_every_named_script_exists():
    missing = {(f.relative_to(REPO).as_posix(), name)
               for f in _texts() for name in SCRIPT_PATH.findall(f.read_text(encoding="utf-8"))
               if not (REPO / name).is_file()}
    assert not missing, sorted(missing)


def test_scripts_top_level_holds_the_product_only():
    top = {p.name for p in (REPO / "scripts").iterdir() if p.is_file()}
    assert not {n for n in top if n.startswith(("bench_", "check_"))}, "benchmarks belong in scripts/bench/"
    assert {"main.sh", "setup.sh", "test.sh"} <= top


@pytest.mark.parametrize("study", sorted((REPO / "scripts" / "studies").glob("*.py")), ids=lambda p: p.name)
def test_each_study_says_its_question(study):
    first = study.read_text(encoding="utf-8").split("\n", 1)[0]
    assert first.startswith('"""Study: ') and "?" in first, first
