// Operator: per-slot market summary (volumes, clearing prices, share of demand met locally, settled
// vs pending) over a chosen day; before the summary route exists, the coming slots' order books.

import { get, has } from '../api.js';
import { field, fmtCoin, fmtDateTime, fmtWh, h, keyValues, pick, replace, table } from '../dom.js';
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
    const slots = pick(summary, 'slots', 'items', 'per_slot') || (Array.isArray(summary) ? summary : []);
    replace(
      box,
      h('h2', {}, 'Totals'),
      Array.isArray(summary) ? null : keyValues(summary),
      h('h2', {}, 'Per slot'),
      table(
        null,
        [
          { label: 'Slot', value: (s) => fmtDateTime(pick(s, 'slot_start', 'slot')) },
          { label: 'Traded', num: true, value: (s) => fmtWh(pick(s, 'traded_wh', 'volume_wh', 'matched_wh')) },
          { label: 'Demand', num: true, value: (s) => fmtWh(pick(s, 'demand_wh', 'buy_wh')) },
          { label: 'Met locally', num: true, value: (s) => share(pick(s, 'local_share', 'share_local', 'share_of_demand_met_locally', 'local_share_pct')) },
          { label: `Clearing price (${symbol}/kWh)`, num: true, value: (s) => fmtCoin(pick(s, 'clearing_price', 'avg_price', 'price')) },
          { label: 'Trades', num: true, value: (s) => pick(s, 'trades', 'trade_count') ?? '—' },
          { label: 'Settled', num: true, value: (s) => pick(s, 'settled', 'settled_trades') ?? '—' },
          { label: 'Pending', num: true, value: (s) => pick(s, 'pending', 'pending_trades') ?? '—' },
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
  const total = (levels) => (levels || []).reduce((acc, l) => acc + Number(pick(l, 'quantity_wh', 'quantity') || 0), 0);
  return [
    h('h2', {}, 'Coming slots'),
    table(
      null,
      [
        { label: 'Slot', value: (r) => fmtDateTime(r.slot) },
        { label: 'Bids', num: true, value: (r) => fmtWh(total(pick(r.book, 'bids', 'buy'))) },
        { label: 'Asks', num: true, value: (r) => fmtWh(total(pick(r.book, 'asks', 'sell'))) },
        { label: `Band (${symbol}/kWh)`, value: (r) => `${fmtCoin(pick(r.book, 'floor'))} – ${fmtCoin(pick(r.book, 'ceiling'))}` },
      ],
      slots.map((slot, i) => ({ slot, book: books[i] })),
    ),
  ];
}
