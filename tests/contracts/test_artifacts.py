"""The Python loader reads the committed artefacts, which are complete and compiled as pinned."""

from __future__ import annotations

import json

import pytest

from contracts.artifacts import BUILD_DIR, ArtifactNotFound, load_artifact

DEPLOYABLE = ("EnergyCoin", "MeterLedger", "KIP7ReceiverMock", "NonReceiverMock")


@pytest.mark.parametrize("name", DEPLOYABLE)
def test_artefact_is_complete_and_pinned(name: str) -> None:
    artifact = load_artifact(name)
    raw = json.loads((BUILD_DIR / f"{name}.json").read_text())
    assert artifact.name == name
    assert artifact.bytecode.startswith("0x") and len(artifact.bytecode) > 2
    assert artifact.deployed_bytecode.startswith("0x") and len(artifact.deployed_bytecode) > 2
    assert artifact.compiler.startswith("0.8.30+commit.")
    assert raw["settings"]["evmVersion"] == "cancun"
    assert raw["settings"]["optimizer"] == {"enabled": True, "runs": 200}
    assert raw["sourceHash"].startswith("0x") and len(raw["sourceHash"]) == 66
    # EIP-170 limit on deployed code size.
    assert (len(artifact.deployed_bytecode) - 2) // 2 <= 24_576


def test_loader_caches_and_reports_missing() -> None:
    assert load_artifact("EnergyCoin") is load_artifact("EnergyCoin")
    with pytest.raises(ArtifactNotFound):
        load_artifact("NoSuchContract")
