// Wallet: create a custodial wallet with a PIN or link a browser wallet; balance and address; send coins
// (PIN, or a signature from the linked wallet); recent transfers: our transfer records merged with what the
// chain index shows (mints, escrow, settlement payouts), so every coin movement of the address is listed.

import { api, get, has, newIdempotencyKey, post } from '../api.js';
import { append, badge, field, fmtCoin, h, itemsOf, notice, replace, shortHash, timeEl } from '../dom.js';
import { every, isAbout } from '../live.js';
import { askWalletSignature, walletPanel } from './browser-wallet.js';
import { askPin, isFinal, timeline } from './common.js';

const ZERO = '0x0000000000000000000000000000000000000000';

export async function render(root, app) {
  const state = { stop: () => {} };
  const redraw = async () => {
    state.stop();
    replace(root);
    state.stop = await draw(root, app, redraw);
  };
  state.stop = await draw(root, app, redraw);
  return () => state.stop();
}

async function draw(root, app, redraw) {
  const symbol = (app.coin && app.coin.symbol) || 'ENC';
  const stops = [];
  const walletBox = h('section', { class: 'card', 'aria-labelledby': 'wallet-title' });
  const sendBox = h('section', { class: 'card', 'aria-labelledby': 'send-title' });
  const listBox = h('section', { class: 'card', 'aria-labelledby': 'recent-title' });
  append(root, [
    h('h1', {}, 'Wallet'),
    app.user.status === 'pending'
      ? notice('warn', 'Your account is waiting for an operator’s approval. You can set up your wallet meanwhile.')
      : null,
    h('div', { class: 'grid' }, walletBox, sendBox, listBox),
  ]);

  let wallet;
  try {
    wallet = await get('/wallets/me');
  } catch (err) {
    if (err.status !== 404) throw err;
    wallet = null;
  }
  if (!wallet) {
    renderCreate(walletBox, app.user.email, redraw);
    const panel = walletPanel(app, { onLinked: redraw });
    replace(
      sendBox,
      h('h2', { id: 'send-title' }, 'Or link a browser wallet'),
      h('p', {}, 'Keep your own key in MetaMask or Kaia Wallet: it signs each payment itself, and ESSX relays it gas-free.'),
      panel.el,
    );
    replace(listBox, h('h2', { id: 'recent-title' }, 'Recent transfers'), h('p', { class: 'muted' }, 'No transfers yet.'));
    return () => panel.stop();
  }

  const balance = h('p', { class: 'big', id: 'balance', 'aria-live': 'polite', 'aria-atomic': 'true' }, fmtCoin(wallet.balance, symbol));
  const asOf = h('p', { class: 'muted small' });
  replace(
    walletBox,
    h('h2', { id: 'wallet-title' }, 'Balance'),
    balance,
    asOf,
    h(
      'dl',
      { class: 'kv' },
      h('dt', {}, 'Address'),
      h('dd', {}, h('code', { id: 'address' }, wallet.address), ' ', copyButton(wallet.address, app)),
      h('dt', {}, 'Kind'),
      h('dd', { id: 'wallet-kind' }, wallet.kind === 'custodial' ? 'custodial (PIN protected)' : 'linked wallet (you sign each payment)'),
      wallet.kind === 'custodial' ? [h('dt', {}, 'Authenticator'), h('dd', {}, wallet.totp_enabled ? 'on' : 'off')] : null,
      h('dt', {}, 'Gas (KAIA)'),
      h('dd', { id: 'native-balance' }, fmtCoin(wallet.native_balance)),
    ),
  );
  let panel = null;
  if (wallet.kind !== 'custodial') {
    panel = walletPanel(app, { linkedAddress: wallet.address });
    stops.push(panel.stop);
    append(walletBox, [h('h3', {}, 'Browser wallet'), panel.el]);
  }
  const showBalance = (w) => {
    balance.textContent = fmtCoin(w.balance, symbol);
    balance.title = `${w.balance} ${symbol}`;
    asOf.textContent = `as of block ${w.block_number}`;
  };
  showBalance(wallet);

  const recent = h('div', { id: 'recent' });
  replace(listBox, h('h2', { id: 'recent-title' }, 'Recent transfers'), recent);
  const open = new Set(); // transfer ids whose timeline the user opened stay open across refreshes
  const refreshList = async () => {
    const [records, chain] = await Promise.all([
      get('/transfers', { limit: 10 }),
      has('/accounts/{}/transfers') ? get(`/accounts/${wallet.address}/transfers`, { limit: 10 }) : { items: [] },
    ]);
    replace(recent, transferList(mergeMovements(itemsOf(records), itemsOf(chain), wallet.address), wallet.address, symbol, open));
  };

  renderSend(sendBox, { app, wallet, symbol, onChange: () => { refreshList(); refreshWallet(); } });

  const refreshWallet = async () => showBalance(await get('/wallets/me'));
  stops.push(every(4000, refreshWallet));
  stops.push(every(5000, refreshList));
  if (app.stream) {
    stops.push(app.stream.subscribe((event) => {
      if (isAbout(event, 'transfer', 'coin', 'mint', 'settle', 'trade')) {
        refreshWallet();
        refreshList();
      }
    }));
  }
  return () => stops.forEach((stop) => stop());
}

function copyButton(text, app) {
  return h(
    'button',
    {
      type: 'button',
      class: 'secondary small',
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(text);
          app.announce('Address copied.');
        } catch {
          app.announce('Copying is not allowed here; select the address instead.', 'warn');
        }
      },
    },
    'Copy',
  );
}

function renderCreate(box, email, done) {
  const pin = h('input', { type: 'password', name: 'pin', inputmode: 'numeric', pattern: '\\d{4,12}', required: true, autocomplete: 'new-password', minlength: 4, maxlength: 12 });
  const again = h('input', { type: 'password', name: 'pin2', inputmode: 'numeric', pattern: '\\d{4,12}', required: true, autocomplete: 'new-password', minlength: 4, maxlength: 12 });
  const message = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit' }, 'Create wallet');
  const form = h(
    'form',
    { class: 'form' },
    // Lets password managers file the PIN under the right account.
    h('input', { type: 'text', name: 'username', autocomplete: 'username', value: email, hidden: true, readonly: true }),
    field('Choose a PIN', pin, '4 to 12 digits. You will need it to send coins.'),
    field('Repeat the PIN', again),
    message,
    h('div', { class: 'row' }, submit),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    replace(message);
    if (pin.value !== again.value) {
      replace(message, notice('error', 'The two PINs differ.'));
      again.focus();
      return;
    }
    submit.disabled = true;
    try {
      await post('/wallets', { pin: pin.value });
      done();
    } catch (err) {
      replace(message, notice('error', err.message));
      submit.disabled = false;
    }
  });
  replace(
    box,
    h('h2', { id: 'wallet-title' }, 'Create your wallet'),
    h('p', {}, 'The platform keeps your key encrypted; your PIN authorizes each payment. Transfers are gas-free.'),
    form,
  );
}

function renderSend(box, { app, wallet, symbol, onChange }) {
  const to = h('input', { name: 'to', required: true, autocomplete: 'off', spellcheck: 'false' });
  const amount = h('input', { name: 'amount', required: true, inputmode: 'decimal', pattern: '\\d+(\\.\\d{1,18})?', autocomplete: 'off' });
  const memo = h('input', { name: 'memo', maxlength: 500, autocomplete: 'off' });
  const message = h('div', { 'aria-live': 'polite', id: 'send-message' });
  const progress = h('div', { id: 'send-progress' });
  const submit = h('button', { type: 'submit' }, 'Send');
  const form = h(
    'form',
    { class: 'form' },
    field('To', to, 'A 0x address or a user id'),
    field(`Amount (${symbol})`, amount, 'e.g. 2.5'),
    field('Memo (optional)', memo),
    message,
    h('div', { class: 'row' }, submit),
  );
  // One key per intended payment: a retry of the same form (after a network error, a cancelled PIN prompt
  // or a request rejected in the wallet) replays the same transfer, never creates a second one.
  let key = null;
  form.addEventListener('input', () => {
    key = null;
  });
  const authorize = async (transfer) => {
    const ch = transfer.challenge || {};
    if (ch.type === 'signature') {
      const signature = await askWalletSignature(app, { title: 'Sign the transfer', typed: ch.typed_data, linkedAddress: wallet.address });
      return signature ? post(`/transfers/${transfer.id}/authorize`, { signature }) : null;
    }
    const answer = await askPin({
      title: 'Authorize transfer',
      summary: `Send ${fmtCoin(transfer.amount, symbol)} to ${shortHash(transfer.to_address)}`,
      otpRequired: ch.otp_required,
    });
    return answer ? post(`/transfers/${transfer.id}/authorize`, answer) : null;
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    replace(message);
    submit.disabled = true;
    key = key || newIdempotencyKey();
    try {
      const target = /^\d+$/.test(to.value.trim()) ? Number(to.value.trim()) : to.value.trim();
      let transfer = await api('POST', '/transfers', {
        body: { to: target, amount: amount.value.trim(), memo: memo.value.trim() || null },
        idempotencyKey: key,
      });
      // A replay answers with the first response: read where the transfer stands now.
      transfer = await get(`/transfers/${transfer.id}`);
      replace(progress, progressView(transfer, symbol));
      if (transfer.status === 'failed') {
        key = null; // a replayed transfer that expired meanwhile: the next Send makes a new one
        replace(message, notice('error', `That transfer failed: ${transfer.failure_reason || 'see its steps'}. Press Send again for a new one.`));
        return;
      }
      if (transfer.status === 'pending_authorization') {
        const authorized = await authorize(transfer);
        if (!authorized) {
          replace(message, notice('warn', 'Not authorized: nothing was sent. Press Send again to authorize the same transfer.'));
          return;
        }
        transfer = authorized;
        replace(progress, progressView(transfer, symbol));
      }
      key = null;
      form.reset();
      onChange();
      await follow(transfer, progress, symbol);
      onChange();
    } catch (err) {
      if (err.name === 'WalletError' && err.rejected) {
        replace(message, notice('warn', `${err.message} Nothing was sent; press Send again to sign the same transfer.`));
      } else {
        if (err.status === 409 || err.status === 422) key = null; // the request itself must change
        replace(message, notice('error', err.message));
      }
    } finally {
      submit.disabled = false;
    }
  });
  replace(box, h('h2', { id: 'send-title' }, 'Send coins'), form, progress);
}

/** Polls the transfer until it is confirmed or failed, redrawing its timeline. */
async function follow(transfer, progress, symbol) {
  const deadline = Date.now() + 120000;
  while (!isFinal(transfer) && transfer.status !== 'pending_authorization' && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    if (!progress.isConnected) return;
    transfer = await get(`/transfers/${transfer.id}`);
    replace(progress, progressView(transfer, symbol));
  }
}

function progressView(t, symbol) {
  return h(
    'div',
    { class: 'stack', dataset: { transfer: t.id, status: t.status } },
    h('h3', {}, 'Transfer ', badge(t.status)),
    h('p', { class: 'small' }, `${fmtCoin(t.amount, symbol)} to `, h('code', {}, shortHash(t.to_address))),
    t.failure_reason ? notice('error', t.failure_reason) : null,
    timeline(t),
  );
}

/**
 * Our transfer records (with their step timelines) and the chain index's Transfer events of the address,
 * as one list, newest first. An event that is one of our transfers (same transaction, parties and amount)
 * is shown once, as the transfer.
 */
export function mergeMovements(records, events, address) {
  const key = (tx, from, to, amount) => `${String(tx).toLowerCase()}|${from.toLowerCase()}|${to.toLowerCase()}|${amount}`;
  const seen = new Set(records.filter((t) => t.tx_hash).map((t) => key(t.tx_hash, t.from_address, t.to_address, t.amount)));
  const rows = records.map((t) => ({ kind: 'transfer', at: Date.parse(t.created_at), transfer: t }));
  for (const e of events) {
    if (seen.has(key(e.tx_hash, e.from_address, e.to_address, e.value))) continue;
    rows.push({ kind: 'chain', at: e.block_time ? Date.parse(e.block_time) : 0, event: e, address });
  }
  return rows.sort((a, b) => b.at - a.at).slice(0, Math.max(10, records.length));
}

function transferList(rows, myAddress, symbol, open) {
  if (!rows.length) return h('p', { class: 'muted' }, 'No transfers yet.');
  return h('ul', { class: 'stack plain' }, rows.map((row) => (row.kind === 'transfer' ? transferItem(row.transfer, myAddress, symbol, open) : chainItem(row.event, myAddress, symbol))));
}

function transferItem(t, myAddress, symbol, open) {
  const outgoing = t.from_address.toLowerCase() === myAddress.toLowerCase();
  const details = h(
    'details',
    { open: open.has(t.id), ontoggle: () => (details.open ? open.add(t.id) : open.delete(t.id)) },
    h(
      'summary',
      {},
      h('strong', {}, `${outgoing ? '−' : '+'}${fmtCoin(t.amount, symbol)}`),
      ` ${outgoing ? 'to' : 'from'} `,
      h('code', {}, shortHash(outgoing ? t.to_address : t.from_address)),
      ' ',
      badge(t.status),
      ' ',
      h('span', { class: 'muted small' }, timeEl(t.created_at)),
      t.memo ? h('span', { class: 'muted small' }, ` · ${t.memo}`) : null,
    ),
    timeline(t),
  );
  return h('li', { dataset: { transfer: t.id } }, details);
}

/** A coin movement the chain shows but no transfer of ours explains: a mint, escrow, a settlement payout. */
function chainItem(e, myAddress, symbol) {
  const incoming = e.to_address.toLowerCase() === myAddress.toLowerCase();
  const other = incoming ? e.from_address : e.to_address;
  const what = other === ZERO ? (incoming ? 'issued by ESSX' : 'burned') : [incoming ? 'from ' : 'to ', h('code', {}, shortHash(other))];
  return h(
    'li',
    { dataset: { tx: e.tx_hash } },
    h('strong', {}, `${incoming ? '+' : '−'}${fmtCoin(e.value, symbol)}`),
    ' ',
    what,
    ' ',
    badge('confirmed'),
    ' ',
    h('span', { class: 'muted small' }, e.block_time ? timeEl(e.block_time) : '', ` · block ${e.block_number}`),
  );
}
