// Browser wallets (EIP-1193 providers): discovery by EIP-6963 and the injected `window.ethereum` /
// `window.klaytn`, the account, the chain (switched or added from GET /api/v1/coin), and signing.
// No DOM here: the views show what this module reports.

const CHOICE = 'essx.browser-wallet'; // sessionStorage: which wallet this tab connected, to reconnect quietly

/** A wallet's answer that is not a result: code 4001 when the user said no in the wallet (EIP-1193). */
export class WalletError extends Error {
  constructor(code, message, method) {
    super(message);
    this.name = 'WalletError';
    this.code = code;
    this.method = method;
  }

  get rejected() {
    return this.code === 4001;
  }
}

const MESSAGES = {
  4001: 'You rejected the request in your wallet.',
  4100: 'Your wallet has not authorised this page: connect it again.',
  4200: 'Your wallet does not support this request',
  4900: 'Your wallet is disconnected from every chain.',
  4901: 'Your wallet is not connected to the requested chain.',
  '-32002': 'Your wallet already shows a request from this page: open the wallet and answer it.',
};

function walletError(err, method) {
  const code = Number(err && (err.code ?? (err.data && err.data.originalError && err.data.originalError.code)));
  const known = MESSAGES[code];
  const text = known ? (code === 4200 ? `${known} (${method}).` : known) : (err && err.message) || String(err);
  return new WalletError(Number.isFinite(code) ? code : null, text, method);
}

// -- discovery -------------------------------------------------------------------------------

const announced = new Map(); // uuid -> {info, provider}
const watchers = new Set();
if (typeof window !== 'undefined') {
  window.addEventListener('eip6963:announceProvider', (event) => {
    const detail = event.detail;
    if (!detail || !detail.info || !detail.provider || typeof detail.provider.request !== 'function') return;
    const known = announced.get(detail.info.uuid);
    announced.set(detail.info.uuid, detail);
    // Only a wallet seen for the first time is news: every request event makes all wallets announce again.
    if (!known || known.provider !== detail.provider) for (const fn of watchers) fn();
  });
}

/** Calls fn whenever another wallet announces itself (a late extension); returns unsubscribe. */
export function onWalletsChanged(fn) {
  watchers.add(fn);
  return () => watchers.delete(fn);
}

/**
 * The wallets in this browser: [{id, name, icon, rdns, provider}]. EIP-6963 wallets answer the request
 * event synchronously; an injected provider that did not announce itself is added by its global name.
 */
export function discoverWallets(win = window) {
  win.dispatchEvent(new Event('eip6963:requestProvider'));
  const found = [...announced.values()].map(({ info, provider }) => ({
    id: `eip6963:${info.rdns || info.uuid}`,
    name: info.name,
    icon: info.icon,
    rdns: info.rdns,
    provider,
  }));
  const known = new Set(found.map((w) => w.provider));
  if (win.klaytn && !known.has(win.klaytn)) {
    found.push({ id: 'injected:klaytn', name: 'Kaia Wallet', icon: null, rdns: null, provider: kaiaProvider(win.klaytn) });
    known.add(win.klaytn);
  }
  if (win.ethereum && !known.has(win.ethereum) && typeof win.ethereum.request === 'function') {
    const name = win.ethereum.isMetaMask ? 'MetaMask' : win.ethereum.isKaikas ? 'Kaia Wallet' : 'Browser wallet';
    found.push({ id: 'injected:ethereum', name, icon: null, rdns: null, provider: win.ethereum });
  }
  return found;
}

/**
 * Kaia Wallet's legacy `window.klaytn` names its methods klay_* (the Kaia SDK's Web3Provider maps them
 * the same way); a provider that speaks eth_* already is used as it is.
 */
export function kaiaProvider(klaytn) {
  if (!klaytn.isKaikas || typeof klaytn.request !== 'function') return klaytn;
  return {
    isKaikas: true,
    request: ({ method, params }) => klaytn.request({ method: method.replace(/^eth_/, 'klay_'), params }),
    on: (...args) => klaytn.on && klaytn.on(...args),
    removeListener: (...args) => klaytn.removeListener && klaytn.removeListener(...args),
  };
}

// -- a connected wallet ------------------------------------------------------------------------

/** One wallet this page talks to: its provider, the chosen account and the chain it is on. */
export class BrowserWallet {
  constructor(choice) {
    this.choice = choice;
    this.provider = choice.provider;
    this.address = null;
    this.chainId = null;
  }

  async request(method, params) {
    try {
      return await this.provider.request(params === undefined ? { method } : { method, params });
    } catch (err) {
      throw walletError(err, method);
    }
  }

  /** Asks for the account (the wallet may show a prompt); `quiet` only reads an already granted one. */
  async connect({ quiet = false } = {}) {
    const accounts = await this.request(quiet ? 'eth_accounts' : 'eth_requestAccounts');
    if (!Array.isArray(accounts) || !accounts.length) {
      if (quiet) return null;
      throw new WalletError(4100, 'Your wallet shared no account with this page.', 'eth_requestAccounts');
    }
    this.address = String(accounts[0]);
    this.chainId = parseChainId(await this.request('eth_chainId'));
    sessionStorage.setItem(CHOICE, this.choice.id);
    return this.address;
  }

  async readChain() {
    this.chainId = parseChainId(await this.request('eth_chainId'));
    return this.chainId;
  }

  /** Switches the wallet to our chain, adding it first when the wallet does not know it (code 4902). */
  async switchTo(network) {
    try {
      await this.request('wallet_switchEthereumChain', [{ chainId: network.chain_id_hex }]);
    } catch (err) {
      if (err.code !== 4902) throw err;
      if (!network.rpc_urls.length) {
        throw new WalletError(4902, `Your wallet does not know ${network.chain_name}; add it by hand (chain id ${parseInt(network.chain_id_hex, 16)}).`, 'wallet_addEthereumChain');
      }
      await this.request('wallet_addEthereumChain', [addChainParams(network)]);
      await this.request('wallet_switchEthereumChain', [{ chainId: network.chain_id_hex }]);
    }
    return this.readChain();
  }

  /** EIP-191 personal_sign of a text message (hex-encoded UTF-8, then the address). */
  personalSign(message) {
    return this.request('personal_sign', [utf8Hex(message), this.address]);
  }

  /** EIP-712: the served JSON exactly as it came, so the wallet signs what the server will verify. */
  signTypedData(typed) {
    return this.request('eth_signTypedData_v4', [this.address, JSON.stringify(typed)]);
  }

  /** EIP-747: asks the wallet to show the coin. `origin` makes the served icon path absolute. */
  watchAsset(coin, origin) {
    return this.request('wallet_watchAsset', {
      type: 'ERC20',
      options: { address: coin.address, symbol: coin.symbol, decimals: coin.decimals, image: new URL(coin.icon_url, origin).href },
    });
  }

  on(event, fn) {
    if (typeof this.provider.on !== 'function') return () => {};
    this.provider.on(event, fn);
    return () => this.provider.removeListener && this.provider.removeListener(event, fn);
  }
}

let current = null;

/** The wallet this tab is connected to, if any. */
export function connectedWallet() {
  return current && current.address ? current : null;
}

export async function connectWallet(choice, opts) {
  const wallet = new BrowserWallet(choice);
  const address = await wallet.connect(opts);
  if (address) current = wallet;
  return address ? wallet : null;
}

/** After a reload: the wallet this tab used before, if it still grants the account without a prompt. */
export async function reconnect() {
  if (connectedWallet()) return current;
  const id = sessionStorage.getItem(CHOICE);
  const choice = id && discoverWallets().find((w) => w.id === id);
  if (!choice) return null;
  try {
    return await connectWallet(choice, { quiet: true });
  } catch {
    return null;
  }
}

export function forgetWallet() {
  current = null;
  sessionStorage.removeItem(CHOICE);
}

// -- pure helpers (tested in Node) --------------------------------------------------------------

/** EIP-3085 parameters from GET /api/v1/coin's `network`; wallets refuse an empty explorer list. */
export function addChainParams(network) {
  const params = {
    chainId: network.chain_id_hex,
    chainName: network.chain_name,
    rpcUrls: network.rpc_urls,
    nativeCurrency: network.native_currency,
  };
  if (network.block_explorer_urls && network.block_explorer_urls.length) params.blockExplorerUrls = network.block_explorer_urls;
  return params;
}

export function parseChainId(value) {
  const n = typeof value === 'string' ? parseInt(value, value.startsWith('0x') ? 16 : 10) : Number(value);
  return Number.isFinite(n) ? n : null;
}

export function utf8Hex(text) {
  return `0x${[...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

export function sameAddress(a, b) {
  return Boolean(a && b && String(a).toLowerCase() === String(b).toLowerCase());
}

/** Base units (a decimal string of an integer) -> coins as a decimal string, exactly. */
export function unitsToCoins(units, decimals = 18) {
  const digits = BigInt(units).toString().padStart(decimals + 1, '0');
  const whole = digits.slice(0, -decimals);
  const frac = digits.slice(-decimals).replace(/0+$/, '');
  return frac ? `${whole}.${frac}` : whole;
}

/**
 * What a served EIP-712 authorisation does, in words, after checking it is bound to our coin and chain
 * and to the expected signer: {kind, from, to, amount (coins), validUntil (Date)}. Throws otherwise.
 */
export function describeTypedData(typed, coin, signer) {
  const domain = (typed && typed.domain) || {};
  const message = (typed && typed.message) || {};
  if (Number(domain.chainId) !== Number(coin.chain_id)) {
    throw new Error(`the request is for chain ${domain.chainId}, not ESSX's chain ${coin.chain_id}: not signed`);
  }
  if (!sameAddress(domain.verifyingContract, coin.address)) {
    throw new Error(`the request names contract ${domain.verifyingContract}, not the ${coin.symbol} coin: not signed`);
  }
  const kinds = { TransferWithAuthorization: 'transfer', ReceiveWithAuthorization: 'escrow' };
  const kind = kinds[typed.primaryType];
  if (!kind) throw new Error(`unexpected request type ${typed.primaryType}: not signed`);
  if (signer && !sameAddress(message.from, signer)) {
    throw new Error(`the request spends from ${message.from}, not from your wallet ${signer}: not signed`);
  }
  return {
    kind,
    from: message.from,
    to: message.to,
    amount: unitsToCoins(message.value, coin.decimals ?? 18),
    validUntil: new Date(Number(message.validBefore) * 1000),
  };
}
