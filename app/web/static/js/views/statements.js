// Monthly statements: energy bought and sold, coins paid and received, savings against the retail
// tariff and the feed-in price, a chart of savings over recent months, and the CSV export.

import { authFetch, get } from '../api.js';
import { field, fmtCoin, fmtWh, h, notice, pick, replace } from '../dom.js';
import { barChart, chartBox } from '../chart.js';

const MONTHS_IN_CHART = 6;

function monthKey(date) {
  return `${date.getUTCFullYear()}-${String(date.getUTCMonth() + 1).padStart(2, '0')}`;
}

function numberOf(statement, ...names) {
  const value = statement ? pick(statement, ...names) : undefined;
  return value === undefined || value === null ? null : Number(value);
}

export async function render(root, app) {
  const symbol = (app.coin && app.coin.symbol) || 'ENC';
  const now = new Date();
  const month = h('input', { type: 'month', name: 'month', value: monthKey(now), max: monthKey(now), required: true });
  const detail = h('div', { id: 'statement' });
  const chartEl = chartBox(`Savings against the retail tariff and extra income over the feed-in price, per month, over the last ${MONTHS_IN_CHART} months`);
  const csv = h('button', { type: 'button', class: 'secondary' }, 'Download CSV');
  root.append(
    h('h1', {}, 'Statements'),
    h(
      'div',
      { class: 'grid' },
      h(
        'section',
        { class: 'card stack', 'aria-labelledby': 'statement-title' },
        h('h2', { id: 'statement-title' }, 'Monthly statement'),
        h('div', { class: 'row' }, field('Month', month), csv),
        detail,
      ),
      h('section', { class: 'card', 'aria-labelledby': 'savings-title' }, h('h2', { id: 'savings-title' }, 'Savings'), chartEl),
    ),
  );

  const show = async () => {
    try {
      const s = await get('/statements', { month: month.value });
      // Settled figures (metered, paid) and pending ones (contracted, in escrow) never mix.
      const settled = [
        ['Energy bought', fmtWh(pick(s, 'bought_wh'))],
        ['Energy sold', fmtWh(pick(s, 'sold_wh'))],
        ['Coins paid', fmtCoin(pick(s, 'coins_paid'), symbol)],
        ['Coins received', fmtCoin(pick(s, 'coins_received'), symbol)],
        ['Refunded', fmtCoin(pick(s, 'coins_refunded'), symbol)],
        ['Penalised', fmtCoin(pick(s, 'coins_penalised'), symbol)],
        [`Average buy price (${symbol}/kWh)`, fmtCoin(pick(s, 'average_buy_price'))],
        [`Average sell price (${symbol}/kWh)`, fmtCoin(pick(s, 'average_sell_price'))],
        ['Saved against the retail tariff', fmtCoin(pick(s, 'savings_vs_retail'), symbol)],
        ['Earned over the feed-in price', fmtCoin(pick(s, 'extra_income_vs_feed_in'), symbol)],
      ];
      const p = s.pending || null;
      const pending = p
        ? [
            ['Energy bought (contracted)', fmtWh(p.bought_wh)],
            ['Energy sold (contracted)', fmtWh(p.sold_wh)],
            ['Coins in escrow', fmtCoin(p.coins_in_escrow, symbol)],
            ['Expected income', fmtCoin(p.expected_income, symbol)],
          ]
        : [];
      const list = (rows, id) => h('dl', { class: 'kv', id }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
      replace(
        detail,
        h('h3', {}, `Settled (${pick(s, 'settled_trades') ?? pick(s, 'trades') ?? 0} trades)`),
        list(settled, 'statement-settled'),
        p && p.trades
          ? h(
              'div',
              { class: 'pending-figures' },
              h('h3', {}, `Waiting for settlement (${p.trades} trades)`),
              h('p', { class: 'muted small' }, 'Contracted, not yet metered: these become payments once the slot is settled.'),
              list(pending, 'statement-pending'),
            )
          : null,
      );
    } catch (err) {
      replace(detail, notice('error', err.message));
    }
  };
  month.addEventListener('change', show);
  csv.addEventListener('click', async () => {
    const res = await authFetch(`/api/v1/statements?month=${encodeURIComponent(month.value)}`, { headers: { Accept: 'text/csv' } });
    if (!res.ok) return app.announce(`No CSV: HTTP ${res.status}`, 'error');
    const url = URL.createObjectURL(await res.blob());
    const a = h('a', { href: url, download: `essx-statement-${month.value}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  await show();

  const months = Array.from({ length: MONTHS_IN_CHART }, (_, i) => {
    const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - (MONTHS_IN_CHART - 1 - i), 1));
    return monthKey(d);
  });
  const statements = await Promise.all(months.map((m) => get('/statements', { month: m }).catch(() => null)));
  const savings = statements.map((st) => numberOf(st, 'savings_vs_retail', 'savings'));
  const extra = statements.map((st) => numberOf(st, 'extra_income_vs_feed_in', 'extra_income'));
  let chart = null;
  try {
    chart = await barChart(chartEl, {
      labels: months,
      series: [
        { label: `Saved vs retail (${symbol})`, color: '--accent', values: savings },
        { label: `Earned over feed-in (${symbol})`, color: '--pv', values: extra },
      ],
      format: (v) => fmtCoin(String(Math.round(v * 100) / 100)),
    });
  } catch (err) {
    console.warn('chart library unavailable', err);
    replace(chartEl, h('ul', {}, months.map((m, i) => h('li', {}, `${m}: saved ${savings[i] ?? '—'}, earned ${extra[i] ?? '—'}`))));
  }
  return () => chart && chart.destroy();
}
