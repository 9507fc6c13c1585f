// Operator: per-slot market summary (volumes, clearing prices, share of demand met locally, settled
// vs pending) over a chosen day; before the summary route exists, the coming slots' order books.

import { get, has } from '../api.js';
import { field, fmtCoin, fmtWh, h, pick, replace, table, timeEl } from '../dom.js';
import { every } from '../live.js';
import { openSlots } from './common.js';

export async function render(root, app) {
  const symbol = (app.coin && app.coin.symbol) || 'ENC';
  const box = h('div', { id: 'market-summary', class: 'stack' });
  const today = new Date().toISOString().slice(0, 10);
  const day = h('input', { type: 'date', name: 'day', value: today, max: today });
  root.append(h('h1', {}, 'Market'));
  if (has('/admin/market/summary')) root.append(h('div', { class: 'row' }, field('Day (UTC)', day)));
  root.append(h('section', { class: 'card' }, box));

  const refresh = async () => {
    if (!has('/admin/market/summary')) return replace(box, await upcomingBooks(symbol));
    const from = new Date(`${day.value}T00:00:00Z`);
    const to = new Date(from.getTime() + 24 * 3600 * 1000);
    const summary = await get('/admin/market/summary', { from: from.toISOString(), to: to.toISOString() });
    const slots = pick(summary, 'slots', 'items') || [];
    const totals = [
      ['Trades', pick(summary, 'trades') ?? '—'],
      ['Volume', fmtWh(pick(summary, 'volume_wh', 'traded_wh'))],
      ['Value', fmtCoin(pick(summary, 'value'), symbol)],
      [`Average price (${symbol}/kWh)`, fmtCoin(pick(summary, 'average_price'))],
      ['Demand', fmtWh(pick(summary, 'demand_wh'))],
      ['Demand met locally', share(pick(summary, 'share_of_demand_met_locally', 'local_share'))],
      ['Settled trades', pick(summary, 'settled') ?? '—'],
      ['Pending settlement', pick(summary, 'pending') ?? '—'],
    ];
    replace(
      box,
      h('h2', {}, 'Totals'),
      h('dl', { class: 'stats', id: 'market-totals' }, totals.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))),
      h('h2', {}, 'Per slot'),
      table(
        null,
        [
          { label: 'Slot', value: (s) => timeEl(pick(s, 'slot_start', 'slot')) },
          { label: 'Volume', num: true, value: (s) => fmtWh(pick(s, 'volume_wh', 'traded_wh')) },
          { label: `Value (${symbol})`, num: true, value: (s) => fmtCoin(pick(s, 'value')) },
          { label: `Lowest price (${symbol}/kWh)`, num: true, value: (s) => fmtCoin(pick(s, 'min_price', 'clearing_price')) },
          { label: `Highest price (${symbol}/kWh)`, num: true, value: (s) => fmtCoin(pick(s, 'max_price', 'clearing_price')) },
        ],
        slots,
        'No trades in this period.',
      ),
    );
  };
  day.addEventListener('change', refresh);
  return every(15000, refresh);
}

function share(value) {
  if (value === undefined || value === null) return '—';
  const n = Number(value);
  return `${(n <= 1 ? n * 100 : n).toFixed(1)} %`;
}

async function upcomingBooks(symbol) {
  const rules = has('/market') ? await get('/market').catch(() => ({})) : {};
  const slots = openSlots({ slotMinutes: rules.slot_minutes || 15, gateClosureMinutes: rules.gate_closure_minutes ?? 5, count: 6 });
  const books = await Promise.all(slots.map((s) => get('/market/book', { slot_start: s.toISOString() })));
  const total = (levels) => (levels || []).reduce((acc, l) => acc + Number(pick(l, 'quantity_wh') || 0), 0);
  return [
    h('h2', {}, 'Coming slots'),
    table(
      null,
      [
        { label: 'Slot', value: (r) => timeEl(r.slot.toISOString()) },
        { label: 'Bids', num: true, value: (r) => fmtWh(total(r.book.bids)) },
        { label: 'Asks', num: true, value: (r) => fmtWh(total(r.book.asks)) },
        { label: `Band (${symbol}/kWh)`, value: (r) => `${fmtCoin(pick(r.book, 'floor'))} – ${fmtCoin(pick(r.book, 'ceiling'))}` },
      ],
      slots.map((slot, i) => ({ slot, book: books[i] })),
    ),
  ];
}
