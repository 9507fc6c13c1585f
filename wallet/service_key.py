"""The service account (admin, minter, relayer): loaded from an encrypted keystore file.

anvil's well-known development key is accepted only on the local chain, where it is public anyway.
"""

from __future__ import annotations

import json
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from wallet.localchain import ANVIL_DEV_KEYS


class ServiceKeyError(RuntimeError):
    pass


def load_keystore(path: Path, password: str) -> LocalAccount:
    """Reads an Ethereum v3 keystore or a Klaytn v4 keystore (first key of the transaction role)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ServiceKeyError(f"cannot read keystore {path}: {type(exc).__name__}") from None
    try:
        if doc.get("version") == 4:
            from web3py_ext import extend  # noqa: F401  (adds Account.v4_decrypt)

            keys = Account.v4_decrypt(doc, password)  # type: ignore[attr-defined]
            key = keys[0] if isinstance(keys, list) else keys
            if isinstance(key, list):
                key = key[0]
        else:
            key = Account.decrypt(doc, password)
    except ValueError:
        # Never echo the password or the key material.
        raise ServiceKeyError(f"cannot decrypt keystore {path}: wrong password or corrupt file") from None
    return Account.from_key(key)


def write_keystore(path: Path, account: LocalAccount, password: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = Account.encrypt(account.key, password)
    path.write_text(json.dumps(doc))
    path.chmod(0o600)


def service_account(
    *, is_local: bool, keystore: Path | None, password: str | None, password_file: Path | None
) -> LocalAccount:
    if keystore is not None:
        if password is None and password_file is not None:
            password = password_file.read_text().strip()
        if password is None:
            raise ServiceKeyError("the service keystore needs ESSX_SERVICE_KEYSTORE_PASSWORD(_FILE)")
        account = load_keystore(keystore, password)
        if not is_local and account.key.hex() in {k.removeprefix("0x") for k in ANVIL_DEV_KEYS} | set(
            ANVIL_DEV_KEYS
        ):
            raise ServiceKeyError("anvil's public development key is allowed only on the local chain")
        return account
    if not is_local:
        raise ServiceKeyError("outside the local chain the service key must come from an encrypted keystore")
    return Account.from_key(ANVIL_DEV_KEYS[0])
