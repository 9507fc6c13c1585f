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
    market: MarketParams | None = None,
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
    deployment = Deployment(
        chain_id=chain_id,
        network=network,
        deployer=account.address,
        deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _deploy_one(w3, account, deployment, "EnergyCoin", token_name, token_symbol, account.address)
    return ensure_contracts(w3, account, deployment, directory, market)


def _deploy_one(w3: Web3, account: LocalAccount, deployment: Deployment, name: str, *args: object) -> None:
    address = deploy_contract(w3, load_artifact(name), account, *args)
    deployment.contracts[name] = address
    deployment.blocks[name] = int(w3.eth.block_number)  # the receipt was awaited: creation is at or before


@dataclass(frozen=True)
class MarketParams:
    """Immutable in the EnergyMarket contract: chosen once, at deployment."""

    refund_timeout_seconds: int = 86_400
    penalty_bps: int = 0


def _constructor_args(
    name: str, deployment: Deployment, account: LocalAccount, market: MarketParams
) -> tuple[object, ...]:
    """The platform contracts that come after the coin, and what each is built with."""
    coin = deployment.contracts["EnergyCoin"]
    if name == "EnergyMarket":
        ledger = deployment.contracts["MeterLedger"]
        return (coin, ledger, account.address, market.refund_timeout_seconds, market.penalty_bps)
    return {
        "AuthorizationRelay": (coin,),
        "MeterLedger": (account.address,),
    }[name]


LATER_CONTRACTS = ("AuthorizationRelay", "MeterLedger", "EnergyMarket")


def ensure_contracts(
    w3: Web3,
    account: LocalAccount,
    deployment: Deployment,
    directory: Path,
    market: MarketParams | None = None,
) -> Deployment:
    """Adds the platform contracts a deployment does not have yet (a newer release added them); the
    coin itself is never deployed again here. Writes the record after each contract."""
    market = market or MarketParams()
    for name in LATER_CONTRACTS:
        if name not in deployment.contracts:
            _deploy_one(w3, account, deployment, name, *_constructor_args(name, deployment, account, market))
            if name == "EnergyMarket":
                _grant_operator(w3, account, deployment.contracts[name])
            save_deployment(directory, deployment)
    save_deployment(directory, deployment)
    return deployment


def _grant_operator(w3: Web3, account: LocalAccount, market_address: str) -> None:
    """The service account records trades and settles: it needs the market's OPERATOR_ROLE."""
    market = w3.eth.contract(
        address=Web3.to_checksum_address(market_address), abi=load_artifact("EnergyMarket").abi
    )
    role = market.functions.OPERATOR_ROLE().call()
    tx = market.functions.grantRole(role, account.address).build_transaction(
        {
            "from": account.address,
            "nonce": w3.eth.get_transaction_count(account.address, "pending"),
            "chainId": int(w3.eth.chain_id),
        }
    )
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(account.sign_transaction(tx).rawTransaction)
    )
    if receipt["status"] != 1:
        raise RuntimeError("granting the market's operator role failed")


def save_deployment(directory: Path, deployment: Deployment) -> None:
    path = deployment_path(directory, deployment.chain_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(deployment), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
