"""A browser wallet for the e2e tests: an EIP-1193 provider injected into the page, backed by a real key in
Python (eth-account) through Playwright's `expose_function`, announced by EIP-6963 and, like MetaMask, as
`window.ethereum`.

It behaves like a wallet where a dApp can get it wrong: it starts on another chain and refuses typed data
for a chain it is not on, answers an unknown chain with 4902, checks `wallet_addEthereumChain` against the
RPC endpoint it names (as MetaMask does), fetches the icon `wallet_watchAsset` names, and a test can make
the "user" reject the next request of a kind (code 4001). Every request is recorded.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_defunct, encode_typed_data

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from playwright.sync_api import Page

ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'%3E"
    "%3Crect width='32' height='32' rx='8' fill='%23{color}'/%3E%3C/svg%3E"
)

# The provider the page sees. %(...)s are filled in per wallet; the Python side answers every request.
INIT_SCRIPT = """
(() => {
  const binding = %(binding)s;
  const listeners = new Map();
  const emit = (event, arg) => (listeners.get(event) || []).slice().forEach((fn) => fn(arg));
  const provider = {
    isEssxTestWallet: true,
    async request(args) {
      if (!args || typeof args.method !== 'string') {
        throw Object.assign(new Error('Invalid request'), { code: -32600 });
      }
      const answer = await window[binding](args.method, args.params === undefined ? null : args.params);
      for (const [event, arg] of answer.events || []) queueMicrotask(() => emit(event, arg));
      if (answer.error) throw Object.assign(new Error(answer.error.message), { code: answer.error.code });
      return answer.result;
    },
    on(event, fn) {
      listeners.set(event, [...(listeners.get(event) || []), fn]);
      return provider;
    },
    removeListener(event, fn) {
      listeners.set(event, (listeners.get(event) || []).filter((f) => f !== fn));
      return provider;
    },
  };
  const info = Object.freeze(%(info)s);
  const announce = () =>
    window.dispatchEvent(new CustomEvent('eip6963:announceProvider', { detail: Object.freeze({ info, provider }) }));
  window.addEventListener('eip6963:requestProvider', announce);
  announce();
  if (%(inject)s) window.ethereum = provider;
})();
"""


class WalletRefusal(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _hex_int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"0x[1-9a-f][0-9a-f]*", value):
        raise WalletRefusal(
            -32602, f"{what} must be a 0x-prefixed hex string without leading zeros: {value!r}"
        )
    return int(value, 16)


@dataclass
class InjectedWallet:
    name: str = "Test Wallet"
    rdns: str = "org.example.testwallet"
    chain_id: int = 1  # starts on Ethereum mainnet, like a fresh MetaMask
    color: str = "6f42c1"
    inject: bool = True
    account: LocalAccount = field(default_factory=Account.create)
    chains: dict[int, str | None] = field(default_factory=lambda: {1: None})  # chain id -> RPC URL
    connected: bool = False
    calls: list[tuple[str, Any]] = field(default_factory=list)
    signed_typed_data: list[str] = field(default_factory=list)  # the exact JSON strings signed
    watched: list[dict[str, Any]] = field(default_factory=list)
    expected_domain: str | None = None  # the SIWE domain the page's origin has (MetaMask checks it)
    _reject: set[str] = field(default_factory=set)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def address(self) -> str:
        return str(self.account.address)

    def reject_next(self, method: str) -> None:
        """The user will press Reject on the next request of this kind."""
        self._reject.add(method)

    def requests(self, method: str) -> list[Any]:
        return [params for m, params in self.calls if m == method]

    def install(self, page: Page) -> None:
        """Before the first navigation: the provider exists from the page's first script on."""
        binding = f"__essxWallet_{self.uid}"
        page.expose_function(binding, self.handle)
        info = {
            "uuid": str(uuid.UUID(self.uid)),
            "name": self.name,
            "icon": ICON.format(color=self.color),
            "rdns": self.rdns,
        }
        page.add_init_script(
            script=INIT_SCRIPT
            % {"binding": json.dumps(binding), "info": json.dumps(info), "inject": json.dumps(self.inject)}
        )

    # -- the JSON-RPC side ---------------------------------------------------------------------------

    def handle(self, method: str, params: Any) -> dict[str, Any]:
        self.calls.append((method, params))
        events: list[list[Any]] = []
        try:
            if method in self._reject:
                self._reject.discard(method)
                raise WalletRefusal(4001, "User rejected the request.")
            handler = getattr(self, "rpc_" + method, None)
            if handler is None:
                raise WalletRefusal(4200, f"The method {method} is not supported.")
            return {"result": handler(params, events), "events": events}
        except WalletRefusal as refusal:
            return {"error": {"code": refusal.code, "message": refusal.message}, "events": events}

    def _need_account(self, address: Any) -> None:
        if not self.connected:
            raise WalletRefusal(4100, "The requested account has not been authorized by the user.")
        if not isinstance(address, str) or address.lower() != self.address.lower():
            raise WalletRefusal(4100, f"{address!r} is not an account of this wallet.")

    def rpc_eth_requestAccounts(self, _params: Any, events: list[list[Any]]) -> list[str]:
        if not self.connected:
            self.connected = True
            events.append(["accountsChanged", [self.address.lower()]])
        return [self.address.lower()]  # wallets answer in lower case; the page must not care

    def rpc_eth_accounts(self, _params: Any, _events: list[list[Any]]) -> list[str]:
        return [self.address.lower()] if self.connected else []

    def rpc_eth_chainId(self, _params: Any, _events: list[list[Any]]) -> str:
        return hex(self.chain_id)

    def rpc_personal_sign(self, params: Any, _events: list[list[Any]]) -> str:
        data_hex, address = params
        self._need_account(address)
        data = bytes.fromhex(str(data_hex).removeprefix("0x"))
        text = data.decode("utf-8", errors="replace")
        if " wants you to sign in with your Ethereum account:" in text and self.expected_domain:
            domain = text.split(" wants you to sign in", 1)[0]
            if domain != self.expected_domain:
                raise WalletRefusal(
                    -32602, f"the sign-in request names {domain}, this page is {self.expected_domain}"
                )
        return "0x" + bytes(self.account.sign_message(encode_defunct(primitive=data)).signature).hex()

    def rpc_eth_signTypedData_v4(self, params: Any, _events: list[list[Any]]) -> str:
        address, typed_json = params
        self._need_account(address)
        if not isinstance(typed_json, str):
            raise WalletRefusal(-32602, "eth_signTypedData_v4 takes the typed data as a JSON string")
        typed = json.loads(typed_json)
        chain = int(typed.get("domain", {}).get("chainId", -1))
        if chain != self.chain_id:  # MetaMask's rule: typed data only for the active chain
            raise WalletRefusal(
                -32603, f'Provided chainId "{chain}" must match the active chainId "{self.chain_id}"'
            )
        self.signed_typed_data.append(typed_json)
        return "0x" + bytes(self.account.sign_message(encode_typed_data(full_message=typed)).signature).hex()

    def rpc_wallet_switchEthereumChain(self, params: Any, events: list[list[Any]]) -> None:
        chain = _hex_int(params[0]["chainId"], "chainId")
        if chain not in self.chains:
            raise WalletRefusal(
                4902,
                f'Unrecognized chain ID "{params[0]["chainId"]}". Try adding the chain using wallet_addEthereumChain first.',
            )
        if chain != self.chain_id:
            self.chain_id = chain
            events.append(["chainChanged", hex(chain)])

    def rpc_wallet_addEthereumChain(self, params: Any, _events: list[list[Any]]) -> None:
        p = params[0]
        chain = _hex_int(p.get("chainId"), "chainId")
        urls = p.get("rpcUrls")
        if not isinstance(p.get("chainName"), str) or not p["chainName"]:
            raise WalletRefusal(-32602, "chainName is required")
        if not isinstance(urls, list) or not urls or not all(re.match(r"https?://", u) for u in urls):
            raise WalletRefusal(-32602, "rpcUrls must be a non-empty list of http(s) URLs")
        currency = p.get("nativeCurrency") or {}
        if currency.get("decimals") != 18 or not 2 <= len(str(currency.get("symbol", ""))) <= 6:
            raise WalletRefusal(-32602, f"invalid nativeCurrency {currency!r}")
        explorers = p.get("blockExplorerUrls")
        if explorers is not None and (
            not explorers or not all(str(u).startswith("https://") for u in explorers)
        ):
            raise WalletRefusal(-32602, "blockExplorerUrls must be omitted or a non-empty list of https URLs")
        try:  # like MetaMask: the endpoint must answer with the chain id it is added for
            answer = httpx.post(
                urls[0], json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=10
            ).json()
        except httpx.HTTPError as exc:
            raise WalletRefusal(-32603, f"cannot reach {urls[0]}: {exc}") from None
        if int(answer["result"], 16) != chain:
            raise WalletRefusal(-32603, f"{urls[0]} is chain {int(answer['result'], 16)}, not {chain}")
        self.chains[chain] = urls[0]

    def rpc_wallet_watchAsset(self, params: Any, _events: list[list[Any]]) -> bool:
        p = params[0] if isinstance(params, list) else params  # EIP-747 passes an object
        options = p.get("options") or {}
        if p.get("type") != "ERC20":
            raise WalletRefusal(-32602, "Asset type is required (ERC20)")
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", str(options.get("address"))):
            raise WalletRefusal(-32602, f"Invalid address {options.get('address')!r}")
        if not isinstance(options.get("symbol"), str) or not 1 <= len(options["symbol"]) <= 11:
            raise WalletRefusal(-32602, "Invalid symbol")
        if not isinstance(options.get("decimals"), int) or not 0 <= options["decimals"] <= 36:
            raise WalletRefusal(-32602, "Invalid decimals")
        image = options.get("image")
        if image is not None:
            icon = httpx.get(image, timeout=10)
            if icon.status_code != 200 or not icon.headers.get("content-type", "").startswith("image/"):
                raise WalletRefusal(-32602, f"the image {image} does not load ({icon.status_code})")
        self.watched.append(options)
        return True

    # -- what a test compares ------------------------------------------------------------------------

    @staticmethod
    def digest(typed_json: str) -> str:
        """The EIP-712 digest of typed data, as eth-account computes it."""
        return (
            "0x" + bytes(_hash_eip191_message(encode_typed_data(full_message=json.loads(typed_json)))).hex()
        )
