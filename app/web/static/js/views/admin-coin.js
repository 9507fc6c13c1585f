// Operator: the coin's state, issuing coins (mint) and pausing or unpausing all transfers, and every mint
// and burn the chain holds (from the transfer index, with the reason our records give).

import { api, get, has, newIdempotencyKey } from '../api.js';
import { badge, field, fmtCoin, h, itemsOf, notice, replace, shortHash, table, timeEl } from '../dom.js';
import { every } from '../live.js';
import { txLink } from './common.js';

export async function render(root, app) {
  const info = h('div', { id: 'coin-info' });
  const ops = h('div', { id: 'coin-ops', class: 'stack' });
  const pauseBox = h('div', { class: 'row' });
  const mintBox = h('section', { class: 'card', 'aria-labelledby': 'mint-title' });
  const history = h('div', { id: 'coin-history' });
  root.append(
    h('h1', {}, 'Coin'),
    h(
      'div',
      { class: 'grid' },
      h('section', { class: 'card stack', 'aria-labelledby': 'coin-title' }, h('h2', { id: 'coin-title' }, 'Energy coin'), info, pauseBox),
      mintBox,
      h('section', { class: 'card wide', 'aria-labelledby': 'ops-title' }, h('h2', { id: 'ops-title' }, 'Operations this session'), ops),
      h(
        'section',
        { class: 'card wide', 'aria-labelledby': 'history-title' },
        h('h2', { id: 'history-title' }, 'Issued and burned'),
        h('p', { class: 'muted small' }, 'Every mint and burn on chain, newest first, whoever made it and whenever.'),
        history,
      ),
    ),
  );

  let coin = await get('/coin');
  const operations = new Map(); // id -> last known state, shown newest first
  const showOps = () =>
    replace(
      ops,
      operations.size
        ? [...operations.values()].reverse().map((op) =>
            h(
              'p',
              { dataset: { op: op.id, status: op.status } },
              badge(op.status),
              ` ${op.kind}`,
              op.amount ? ` ${fmtCoin(op.amount, coin.symbol)}` : '',
              op.account ? [' to ', h('code', {}, op.account)] : '',
              ' · ',
              txLink(op.tx_hash, coin.chain_id),
              op.error ? h('span', { class: 'muted small' }, ` ${op.error}`) : '',
            ),
          )
        : h('p', { class: 'muted' }, 'Mints, pauses and unpauses you make appear here until they are final.'),
    );
  const track = (op) => {
    operations.set(op.id, op);
    showOps();
  };

  const run = async (kind, body) => {
    const op = await api('POST', `/admin/coin/${kind}`, { body, idempotencyKey: newIdempotencyKey() });
    track(op);
    return op;
  };

  const showInfo = () => {
    replace(
      info,
      h(
        'dl',
        { class: 'kv' },
        h('dt', {}, 'Name'),
        h('dd', {}, `${coin.name} (${coin.symbol})`),
        h('dt', {}, 'Total supply'),
        h('dd', { id: 'total-supply' }, fmtCoin(coin.total_supply, coin.symbol)),
        h('dt', {}, 'Transfers'),
        h('dd', { id: 'paused' }, badge(coin.paused ? 'paused' : 'active')),
        h('dt', {}, 'Contract'),
        h('dd', {}, h('code', {}, coin.address)),
        h('dt', {}, 'Chain id'),
        h('dd', {}, coin.chain_id),
      ),
    );
    const action = coin.paused ? 'unpause' : 'pause';
    replace(
      pauseBox,
      h(
        'button',
        {
          type: 'button',
          class: coin.paused ? '' : 'danger',
          id: 'pause-toggle',
          onclick: async (e) => {
            const button = e.currentTarget;
            if (!coin.paused && !confirm('Pause every coin transfer on chain?')) return;
            button.disabled = true;
            try {
              await run(action, { memo: `from the dashboard` });
              app.announce(`${action === 'pause' ? 'Pause' : 'Unpause'} submitted.`);
            } catch (err) {
              app.announce(`Could not ${action}: ${err.message}`, 'error');
              button.disabled = false;
            }
          },
        },
        coin.paused ? 'Unpause transfers' : 'Pause transfers',
      ),
    );
  };
  showInfo();
  showOps();
  mintForm(mintBox, { app, symbol: coin.symbol, run });

  const REASONS = { mint: 'issued', grant: 'approval grant', production_reward: 'production reward', burn: 'burned', unknown: 'other minter' };
  const showHistory = async () => {
    if (!has('/admin/coin/history')) return replace(history, h('p', { class: 'muted' }, 'The history is not available on this server.'));
    const page = await get('/admin/coin/history', { limit: 50 });
    replace(
      history,
      table(
        null,
        [
          { label: 'When', value: (e) => (e.block_time ? timeEl(e.block_time) : `block ${e.block_number}`) },
          { label: 'What', value: (e) => [badge(e.kind), ` ${REASONS[e.reason] || e.reason}`] },
          { label: 'Amount', num: true, value: (e) => fmtCoin(e.amount, coin.symbol) },
          { label: 'Account', value: (e) => h('code', { title: e.account }, shortHash(e.account)) },
          { label: 'Memo', value: (e) => [e.memo || '', e.actor_email ? h('span', { class: 'muted small' }, ` by ${e.actor_email}`) : ''] },
          { label: 'Transaction', value: (e) => txLink(e.tx_hash, coin.chain_id) },
        ],
        itemsOf(page),
        'No coins issued yet.',
      ),
    );
  };

  const refresh = async () => {
    coin = await get('/coin');
    showInfo();
    await showHistory();
    for (const op of operations.values()) {
      if (op.status === 'submitted') track(await get(`/admin/coin/operations/${op.id}`));
    }
  };
  return every(3000, refresh);
}

function mintForm(box, { app, symbol, run }) {
  const to = h('input', { name: 'to', required: true, autocomplete: 'off', spellcheck: 'false' });
  const amount = h('input', { name: 'amount', required: true, inputmode: 'decimal', pattern: '\\d+(\\.\\d{1,18})?', autocomplete: 'off' });
  const memo = h('input', { name: 'memo', maxlength: 500, autocomplete: 'off' });
  const message = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit' }, 'Issue coins');
  const form = h(
    'form',
    { class: 'form' },
    field('To', to, 'A 0x address or a user id'),
    field(`Amount (${symbol})`, amount),
    field('Memo (optional)', memo),
    message,
    h('div', { class: 'row' }, submit),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    submit.disabled = true;
    replace(message);
    try {
      const target = /^\d+$/.test(to.value.trim()) ? Number(to.value.trim()) : to.value.trim();
      const op = await run('mint', { to: target, amount: amount.value.trim(), memo: memo.value.trim() || null });
      replace(message, notice('ok', `Mint of ${fmtCoin(op.amount, symbol)} submitted.`));
      form.reset();
    } catch (err) {
      replace(message, notice('error', err.message));
    } finally {
      submit.disabled = false;
    }
  });
  replace(box, h('h2', { id: 'mint-title' }, 'Issue coins'), form);
}
