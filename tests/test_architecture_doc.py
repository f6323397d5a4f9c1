"""docs/architecture.md is drawn from the code: every module path it names exists, every core module is named."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PATH = re.compile(r"(?<![\w/.-])((?:iqabench|adapters|benchmarks|reports)/[\w/]*\w\.py)\b")


def named_paths() -> set[str]:
    return set(PATH.findall(DOC.read_text("utf-8")))


def test_every_module_path_the_page_names_exists():
    named = named_paths()
    assert len(named) > 40
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_core_module_is_named():
    named = named_paths()
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "iqabench").rglob("*.py")}
    packages = {m for m in modules if m.endswith("/__init__.py") and m != "iqabench/__init__.py"}
    absent = sorted(modules - packages - named)
    assert not absent, f"docs/architecture.md does not name these modules: {absent}"


def test_the_page_names_no_import_exception_the_test_does_not_have():
    """The page says the import-graph test lists no exceptions; keep that true."""
    import test_import_graph

    text = " ".join(DOC.read_text("utf-8").replace("*", "").split())
    assert "lists no exceptions" in text and not test_import_graph.ALLOWED
