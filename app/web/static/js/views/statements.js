// Monthly statements: energy bought and sold, coins paid and received, savings against the retail
// tariff and the feed-in price, a chart of savings over recent months, and the CSV export.

import { authFetch, get } from '../api.js';
import { field, fmtCoin, h, keyValues, notice, pick, replace } from '../dom.js';
import { barChart, chartBox } from '../chart.js';

const MONTHS_IN_CHART = 6;

function monthKey(date) {
  return `${date.getUTCFullYear()}-${String(date.getUTCMonth() + 1).padStart(2, '0')}`;
}

function savingsOf(statement) {
  const value = pick(statement, 'savings', 'total_savings', 'savings_total', 'savings.total', 'savings_vs_retail');
  return value === undefined ? null : Number(value);
}

export async function render(root, app) {
  const symbol = (app.coin && app.coin.symbol) || 'ENC';
  const now = new Date();
  const month = h('input', { type: 'month', name: 'month', value: monthKey(now), max: monthKey(now), required: true });
  const detail = h('div', { id: 'statement' });
  const chartEl = chartBox(`Savings per month over the last ${MONTHS_IN_CHART} months`);
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
      replace(detail, keyValues(s, ['month', 'user_id']));
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
  const values = await Promise.all(months.map((m) => get('/statements', { month: m }).then(savingsOf, () => null)));
  let chart = null;
  try {
    chart = await barChart(chartEl, {
      labels: months,
      series: [{ label: `Savings (${symbol})`, color: '--accent', values }],
      format: (v) => fmtCoin(String(Math.round(v * 100) / 100)),
    });
  } catch (err) {
    console.warn('chart library unavailable', err);
    replace(chartEl, h('ul', {}, months.map((m, i) => h('li', {}, `${m}: ${values[i] ?? '—'}`))));
  }
  return () => chart && chart.destroy();
}
