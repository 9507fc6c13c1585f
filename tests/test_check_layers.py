"""The import-layer check passes on the code and catches a planted upward import or a new cycle."""

from __future__ import annotations

from pathlib import Path

from scripts.check_layers import KNOWN_CYCLES, violations

ROOT = Path(__file__).resolve().parent.parent


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for top in ("common", "wallet", "contracts", "ess_collector", "app"):
        (tmp_path / top).mkdir()
        (tmp_path / top / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_code_passes() -> None:
    assert violations(ROOT) == []


def test_an_upward_import_is_caught_even_inside_a_function(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"common/clock.py": "def f():\n    from ess_collector import models\n"})
    (root / "ess_collector" / "models.py").write_text("")
    assert violations(root) == ["common.clock imports ess_collector.models, a layer above it"]


def test_the_collector_may_not_import_the_app(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"ess_collector/collector.py": "from app.models import event\n"})
    assert violations(root) == ["ess_collector.collector imports app, a layer above it"]


def test_a_new_module_cycle_is_caught_and_type_only_imports_are_not(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "app/a.py": "from app import b\n",
            "app/b.py": "def f():\n    from . import a\n",
            "app/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app import d\n",
            "app/d.py": "import app.c\n",
        },
    )
    assert violations(root) == ["import cycle: app.a <-> app.b"]
    assert violations(root, [frozenset({"app.a", "app.b"})]) == []


def test_a_known_cycle_that_grows_is_caught(tmp_path: Path) -> None:
    """A package-level cycle (app.x <-> app.y, no module cycle) passes while known, fails once another
    package joins it, and fails when it is not known at all."""
    files = {
        "app/x/__init__.py": "",
        "app/x/a.py": "from app.y import b\n",
        "app/x/c.py": "",
        "app/y/__init__.py": "",
        "app/y/b.py": "def f():\n    from app.x import c\n",
    }
    root = _tree(tmp_path, {})
    for folder in ("x", "y", "z"):
        (root / "app" / folder).mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    known = [frozenset({"app.x", "app.y"})]
    assert violations(root, known) == []
    assert violations(root, []) == ["import cycle: app.x <-> app.y"]
    (root / "app" / "z" / "__init__.py").write_text("from app.x import a\n")
    (root / "app" / "y" / "d.py").write_text("from app import z\n")
    assert violations(root, known) == ["import cycle: app.x <-> app.y <-> app.z"]


def test_no_cycle_is_left_to_untangle() -> None:
    assert KNOWN_CYCLES == []
