"""Deploying the platform's contracts and reading deployments/<chain_id>.json.

A second deployment never happens silently: `deploy` refuses when a record exists and its contracts
still have code, unless `force` is given.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from contracts.artifacts import deploy_contract, load_artifact


class AlreadyDeployed(RuntimeError):
    pass


@dataclass
class Deployment:
    chain_id: int
    network: str
    deployer: str
    deployed_at: str
    contracts: dict[str, str] = field(default_factory=dict)  # name -> address
    blocks: dict[str, int] = field(default_factory=dict)  # name -> deployment block (indexers start there)

    def address(self, name: str) -> str:
        return self.contracts[name]


def deployment_path(directory: Path, chain_id: int) -> Path:
    return directory / f"{chain_id}.json"


def load_deployment(directory: Path, chain_id: int) -> Deployment | None:
    path = deployment_path(directory, chain_id)
    if not path.exists():
        return None
    return Deployment(**json.loads(path.read_text()))


def is_live(w3: Web3, deployment: Deployment) -> bool:
    """True when every recorded contract has code on this chain."""
    return all(len(w3.eth.get_code(Web3.to_checksum_address(a))) > 0 for a in deployment.contracts.values())


def deploy(
    w3: Web3,
    account: LocalAccount,
    *,
    network: str,
    directory: Path,
    token_name: str,
    token_symbol: str,
    force: bool = False,
) -> Deployment:
    chain_id = int(w3.eth.chain_id)
    existing = load_deployment(directory, chain_id)
    if existing is not None and not force:
        if is_live(w3, existing):
            raise AlreadyDeployed(
                f"contracts are already deployed on chain {chain_id} "
                f"({deployment_path(directory, chain_id)}); pass --force to deploy again"
            )
        raise AlreadyDeployed(
            f"{deployment_path(directory, chain_id)} names contracts that have no code on this chain "
            "(was the chain reset?); pass --force to deploy anew"
        )
    coin_address = deploy_contract(
        w3, load_artifact("EnergyCoin"), account, token_name, token_symbol, account.address
    )
    coin_block = int(w3.eth.block_number)  # the receipt was awaited: creation is at or before this block
    deployment = Deployment(
        chain_id=chain_id,
        network=network,
        deployer=account.address,
        deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        contracts={"EnergyCoin": coin_address},
        blocks={"EnergyCoin": coin_block},
    )
    path = deployment_path(directory, chain_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(deployment), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return deployment
