"""The import-layer check passes on the code and catches a planted upward import or a new cycle."""

from __future__ import annotations

import shutil
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
    root = tmp_path / "copy"
    shutil.copytree(
        ROOT, root, ignore=shutil.ignore_patterns(".venv", "node_modules", ".git", "data", "tests")
    )
    (root / "app" / "newdomain").mkdir()
    (root / "app" / "newdomain" / "__init__.py").write_text("from app.market import service\n")
    (root / "app" / "market" / "extra.py").write_text("from app import newdomain\n")
    assert KNOWN_CYCLES and len(bad := violations(root)) == 1 and "app.newdomain" in bad[0]
