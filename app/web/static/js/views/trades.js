// Trades: each of the user's trades with contracted, measured and settled quantities and the payments.

import { get } from '../api.js';
import { badge, fmtCoin, fmtWh, h, itemsOf, pick, replace, table, timeEl } from '../dom.js';
import { every, isAbout } from '../live.js';
import { txLink } from './common.js';

export async function render(root, app) {
  const symbol = (app.coin && app.coin.symbol) || 'ENC';
  const chainId = app.coin && app.coin.chain_id;
  const box = h('div', { id: 'trades' });
  root.append(
    h('h1', {}, 'Trades'),
    h('p', { class: 'muted' }, 'A trade is a promise until the meters have spoken: it is settled on what was measured.'),
    h('section', { class: 'card' }, box),
  );
  const refresh = async () => {
    const trades = itemsOf(await get('/trades'));
    replace(
      box,
      table(
        null,
        [
          { label: 'Slot', value: (t) => timeEl(t.slot_start) },
          { label: 'Side', value: (t) => pick(t, 'side', 'my_side', 'role') ?? '—' },
          { label: `Price (${symbol}/kWh)`, num: true, value: (t) => fmtCoin(pick(t, 'price')) },
          { label: 'Contracted', num: true, value: (t) => fmtWh(pick(t, 'contracted_wh', 'quantity_wh')) },
          { label: 'Measured', num: true, value: (t) => fmtWh(pick(t, 'measured_wh', 'delivered_wh', 'settlement.measured_wh')) },
          { label: 'Settled', num: true, value: (t) => fmtWh(pick(t, 'settled_wh', 'settlement.settled_wh')) },
          { label: 'Paid', num: true, value: (t) => fmtCoin(pick(t, 'paid', 'amount_paid', 'settlement.paid')) },
          { label: 'Refunded', num: true, value: (t) => fmtCoin(pick(t, 'refunded', 'amount_refunded', 'settlement.refunded')) },
          { label: 'Penalty', num: true, value: (t) => fmtCoin(pick(t, 'penalised', 'penalty', 'amount_penalised', 'settlement.penalised')) },
          { label: 'Status', value: (t) => badge(t.status) },
          {
            label: 'On chain',
            value: (t) =>
              h(
                'span',
                { class: 'chain-links' },
                h('span', {}, 'recorded ', txLink(pick(t, 'record_tx_hash'), chainId)),
                h('span', {}, 'settled ', txLink(pick(t, 'settlement_tx_hash', 'settle_tx_hash', 'settlement.tx_hash'), chainId)),
              ),
          },
        ],
        trades,
        'No trades yet. Place an order on the Market page.',
      ),
    );
  };
  const stops = [every(10000, refresh)];
  if (app.stream) stops.push(app.stream.subscribe((e) => isAbout(e, 'trade', 'settle') && refresh()));
  return () => stops.forEach((s) => s());
}
