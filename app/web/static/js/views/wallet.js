// Wallet: create a custodial wallet with a PIN, balance and address, send coins, recent transfers.

import { api, get, newIdempotencyKey, post } from '../api.js';
import { append, badge, field, fmtCoin, h, itemsOf, notice, replace, shortHash, timeEl } from '../dom.js';
import { every, isAbout } from '../live.js';
import { askPin, isFinal, timeline } from './common.js';

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
    replace(sendBox, h('h2', { id: 'send-title' }, 'Send coins'), h('p', { class: 'muted' }, 'Create a wallet first.'));
    replace(listBox, h('h2', { id: 'recent-title' }, 'Recent transfers'), h('p', { class: 'muted' }, 'No transfers yet.'));
    return () => {};
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
      h('dd', {}, wallet.kind === 'custodial' ? 'custodial (PIN protected)' : 'linked mobile wallet'),
      h('dt', {}, 'Authenticator'),
      h('dd', {}, wallet.totp_enabled ? 'on' : 'off'),
    ),
  );
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
    const items = itemsOf(await get('/transfers', { limit: 10 }));
    replace(recent, transferList(items, wallet.address, symbol, open));
  };

  renderSend(sendBox, { symbol, onChange: () => { refreshList(); refreshWallet(); } });

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

function renderSend(box, { symbol, onChange }) {
  const to = h('input', { name: 'to', required: true, autocomplete: 'off', spellcheck: 'false' });
  const amount = h('input', { name: 'amount', required: true, inputmode: 'decimal', pattern: '\\d+(\\.\\d{1,18})?', autocomplete: 'off' });
  const memo = h('input', { name: 'memo', maxlength: 500, autocomplete: 'off' });
  const message = h('div', { 'aria-live': 'polite' });
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
  // One key per intended payment: a retry of the same form after a network error replays, never pays twice.
  let key = null;
  form.addEventListener('input', () => {
    key = null;
  });
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
      key = null;
      replace(progress, progressView(transfer, symbol));
      if (transfer.status === 'pending_authorization') {
        const ch = transfer.challenge || {};
        if (ch.type === 'signature') {
          replace(message, notice('warn', 'Sign this transfer in your linked mobile wallet; it appears below once relayed.'));
        } else {
          const answer = await askPin({
            title: 'Authorize transfer',
            summary: `Send ${fmtCoin(transfer.amount, symbol)} to ${shortHash(transfer.to_address)}`,
            otpRequired: ch.otp_required,
          });
          if (!answer) {
            replace(message, notice('warn', 'Not authorized. The transfer expires unless you authorize it.'));
            return;
          }
          transfer = await post(`/transfers/${transfer.id}/authorize`, answer);
          replace(progress, progressView(transfer, symbol));
        }
      }
      form.reset();
      onChange();
      await follow(transfer, progress, symbol);
      onChange();
    } catch (err) {
      replace(message, notice('error', err.message));
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

function transferList(items, myAddress, symbol, open) {
  if (!items.length) return h('p', { class: 'muted' }, 'No transfers yet.');
  return h(
    'ul',
    { class: 'stack plain' },
    items.map((t) => {
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
    }),
  );
}
