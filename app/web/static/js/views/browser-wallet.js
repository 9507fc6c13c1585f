// The browser-wallet pieces of the pages: connecting (with a choice when several wallets are installed),
// the chain check and switch, linking by personal_sign, and the signing dialog that shows a served
// EIP-712 request in words before the wallet is asked for it.

import { post } from '../api.js';
import { fmtCoin, fmtDateTime, h, notice, replace, shortHash } from '../dom.js';
import {
  connectWallet,
  connectedWallet,
  describeTypedData,
  discoverWallets,
  forgetWallet,
  onWalletsChanged,
  reconnect,
  sameAddress,
} from '../eip1193.js';

function chainLabel(coin) {
  const net = coin.network || {};
  return `${net.chain_name || 'the ESSX chain'} (chain id ${coin.chain_id})`;
}

function walletIcon(choice) {
  return choice.icon ? h('img', { src: choice.icon, alt: '', width: 20, height: 20, class: 'wallet-icon' }) : null;
}

/**
 * A panel that connects a browser wallet and keeps it on our chain. `linkedAddress`: the address this
 * account has linked (null when none yet). `onLinked()` runs after a successful link.
 * Returns {el, stop}.
 */
export function walletPanel(app, { linkedAddress = null, onLinked = null } = {}) {
  const coin = app.coin;
  const body = h('div', { class: 'stack', id: 'browser-wallet', 'aria-live': 'polite' });
  const message = h('div', { class: 'wallet-message' });
  const el = h('div', { class: 'stack' }, body, message);
  const stops = [];
  let busy = false;

  const fail = (err) => replace(message, notice(err && err.rejected ? 'warn' : 'error', err.message || String(err)));
  const run = (fn) => async (event) => {
    if (busy) return;
    busy = true;
    const button = event && event.currentTarget;
    if (button) button.disabled = true;
    replace(message);
    try {
      await fn();
    } catch (err) {
      fail(err);
    } finally {
      busy = false;
      if (button && button.isConnected) button.disabled = false;
      draw();
    }
  };

  const choose = (choice) =>
    run(async () => {
      const wallet = await connectWallet(choice);
      watch(wallet);
    });

  const watch = (wallet) => {
    stops.forEach((s) => s());
    stops.length = 0;
    stops.push(wallet.on('accountsChanged', (accounts) => {
      wallet.address = accounts && accounts.length ? String(accounts[0]) : null;
      if (!wallet.address) forgetWallet();
      draw();
    }));
    stops.push(wallet.on('chainChanged', (id) => {
      wallet.chainId = parseInt(id, 16);
      draw();
    }));
  };

  function draw() {
    const wallet = connectedWallet();
    if (!wallet) {
      const choices = discoverWallets();
      if (!choices.length) {
        replace(
          body,
          h('p', { class: 'muted', id: 'no-browser-wallet' }, 'No browser wallet was found in this browser. Install MetaMask or Kaia Wallet and reload this page.'),
        );
        return;
      }
      replace(
        body,
        choices.length > 1 ? h('p', {}, 'Choose the wallet to use:') : null,
        h(
          'div',
          { class: 'row', role: 'group', 'aria-label': 'Browser wallets' },
          choices.map((c) => h('button', { type: 'button', class: 'secondary', dataset: { wallet: c.id }, onclick: choose(c) }, walletIcon(c), `Connect ${c.name}`)),
        ),
      );
      return;
    }
    const onChain = wallet.chainId === coin.chain_id;
    const mismatch = linkedAddress && !sameAddress(wallet.address, linkedAddress);
    replace(
      body,
      h(
        'dl',
        { class: 'kv' },
        h('dt', {}, 'Connected'),
        h('dd', {}, h('code', { id: 'connected-address', title: wallet.address }, wallet.address), ` in ${wallet.choice.name}`),
        h('dt', {}, 'Chain'),
        h('dd', { id: 'wallet-chain', dataset: { ok: String(onChain) } }, onChain ? chainLabel(coin) : `chain id ${wallet.chainId ?? 'unknown'}`),
      ),
      mismatch
        ? notice('warn', `This account is linked to ${shortHash(linkedAddress)}; your wallet shows ${shortHash(wallet.address)}. Switch accounts in your wallet.`)
        : null,
      onChain
        ? null
        : h(
            'div',
            { class: 'stack' },
            notice('warn', `Your wallet is on chain ${wallet.chainId ?? 'unknown'}; ESSX runs on ${chainLabel(coin)}.`),
            h('div', { class: 'row' }, h('button', { type: 'button', id: 'switch-chain', onclick: run(() => wallet.switchTo(coin.network)) }, `Switch to ${coin.network.chain_name}`)),
          ),
      h(
        'div',
        { class: 'row' },
        !linkedAddress && onChain ? h('button', { type: 'button', id: 'link-wallet', onclick: run(() => link(wallet)) }, 'Link this wallet') : null,
        linkedAddress && onChain && !mismatch
          ? h('button', { type: 'button', class: 'secondary', id: 'watch-asset', onclick: run(() => watchAsset(wallet)) }, `Add ${coin.symbol} to my wallet`)
          : null,
      ),
    );
  }

  async function link(wallet) {
    const challenge = await post('/wallets/link/challenge', { address: wallet.address });
    const signature = await wallet.personalSign(challenge.message);
    await post('/wallets/link', { address: wallet.address, message: challenge.message, signature });
    app.announce(`Wallet ${shortHash(wallet.address)} is linked to your account.`);
    if (onLinked) onLinked();
  }

  async function watchAsset(wallet) {
    const added = await wallet.watchAsset(coin, location.origin);
    replace(message, notice(added ? 'ok' : 'warn', added ? `${coin.symbol} is now shown in ${wallet.choice.name}.` : `${wallet.choice.name} did not add ${coin.symbol}.`));
  }

  stops.push(onWalletsChanged(() => draw()));
  draw();
  reconnect().then((wallet) => {
    if (wallet) {
      watch(wallet);
      draw();
    }
  });
  return { el, stop: () => stops.forEach((s) => s()) };
}

/**
 * Shows what a served EIP-712 request does (to, amount, valid until) and, on "Sign in wallet", asks the
 * linked wallet for eth_signTypedData_v4 over exactly that JSON. Connects and switches chain first when
 * needed. Resolves the signature, or null when cancelled here; throws a WalletError (err.rejected for a
 * rejection in the wallet) or an Error when the request is not ours to sign.
 */
export function askWalletSignature(app, { title, typed, linkedAddress }) {
  const coin = app.coin;
  const words = describeTypedData(typed, coin, linkedAddress); // throws before anything is shown
  const opener = document.activeElement;
  return new Promise((resolve, reject) => {
    const status = h('p', { class: 'muted small', 'aria-live': 'polite' });
    const sign = h('button', { type: 'button', id: 'sign-in-wallet' }, 'Sign in wallet');
    const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
    const what = words.kind === 'transfer' ? `Send ${fmtCoin(words.amount, coin.symbol)}` : `Lock ${fmtCoin(words.amount, coin.symbol)} in escrow`;
    const dialog = h(
      'dialog',
      { 'aria-labelledby': 'sign-title', id: 'sign-dialog' },
      h(
        'div',
        { class: 'form' },
        h('h2', { id: 'sign-title' }, title),
        h('p', {}, 'Your wallet will ask you to sign this request. Check that it shows the same:'),
        h(
          'dl',
          { class: 'kv', id: 'sign-summary' },
          h('dt', {}, 'What'),
          h('dd', { dataset: { field: 'what' } }, what),
          h('dt', {}, 'To'),
          h('dd', { dataset: { field: 'to' } }, h('code', {}, words.to), words.kind === 'escrow' ? ' (the market contract)' : ''),
          h('dt', {}, 'Amount'),
          h('dd', { dataset: { field: 'amount' } }, `${words.amount} ${coin.symbol}`),
          h('dt', {}, 'Valid until'),
          h('dd', { dataset: { field: 'valid-until' } }, h('time', { datetime: words.validUntil.toISOString() }, fmtDateTime(words.validUntil))),
          h('dt', {}, 'Chain'),
          h('dd', {}, chainLabel(coin)),
        ),
        status,
        h('div', { class: 'row' }, sign, cancel),
      ),
    );
    let settled = false;
    const finish = (fn, value) => {
      if (settled) return;
      settled = true;
      dialog.close();
      dialog.remove();
      if (opener && opener.focus) opener.focus();
      fn(value);
    };
    dialog.addEventListener('cancel', (e) => {
      e.preventDefault(); // Escape: the same as Cancel, but only while the wallet is not asked yet
      if (!sign.disabled) finish(resolve, null);
    });
    cancel.addEventListener('click', () => finish(resolve, null));
    sign.addEventListener('click', async () => {
      sign.disabled = true;
      cancel.disabled = true;
      try {
        let wallet = connectedWallet() || (await reconnect());
        if (!wallet) {
          const choices = discoverWallets();
          if (!choices.length) throw new Error('No browser wallet was found: install one, or link it on the Wallet page.');
          const linked = choices.length === 1 ? choices[0] : null;
          if (!linked) throw new Error('Several wallets are installed: connect the linked one on the Wallet page first.');
          status.textContent = `Connecting ${linked.name}…`;
          wallet = await connectWallet(linked);
        }
        if (!sameAddress(wallet.address, words.from)) {
          throw new Error(`Your wallet shows ${wallet.address}; this request must be signed by ${words.from}. Switch accounts in your wallet.`);
        }
        // The user may have switched networks in the wallet since: ask it, do not trust what we saw.
        if ((await wallet.readChain()) !== coin.chain_id) {
          status.textContent = `Switching your wallet to ${coin.network.chain_name}…`;
          await wallet.switchTo(coin.network);
        }
        status.textContent = 'Waiting for your wallet…';
        finish(resolve, await wallet.signTypedData(typed));
      } catch (err) {
        finish(reject, err);
      }
    });
    document.body.append(dialog);
    dialog.showModal();
    sign.focus();
  });
}
