"""The committed artefacts equal what contracts/src compiles to (`node contracts/build.mjs --check`).

Collected last on purpose: in one test process the check starts with the first contract test (conftest
`artefact_check`) and compiles while the chain tests run. Under xdist this test runs first instead, and
only its worker compiles (tests/conftest.py SLOW_FIRST).
"""

from __future__ import annotations

import subprocess

import pytest


def test_artefacts_match_sources(artefact_check: subprocess.Popen[str] | None) -> None:
    if artefact_check is None:
        pytest.skip("node is not installed")
    output, _ = artefact_check.communicate(timeout=300)
    assert artefact_check.returncode == 0, output
    assert "up to date" in output
