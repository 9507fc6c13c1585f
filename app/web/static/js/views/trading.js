// Automatic trading: the user's trading profile (shown and edited here; enabling is authorised once with
// the wallet PIN, or signed by the linked browser wallet) and what the agent did, and why.

import { api, get, post } from '../api.js';
import { badge, field, fmtCoin, fmtWh, h, itemsOf, notice, replace, table, timeEl } from '../dom.js';
import { connectedWallet, reconnect } from '../eip1193.js';
import { every } from '../live.js';
import { askPin } from './common.js';

export async function render(root, app) {
  const symbol = (app.coin && app.coin.symbol) || 'ENC';
  const sites = app.user.role === 'prosumer' ? await get('/sites').catch(() => []) : [];
  const formBox = h('section', { class: 'card', 'aria-labelledby': 'profile-title' });
  const activityBox = h('div', { id: 'agent-activity' });
  root.append(
    h('h1', {}, 'Automatic trading'),
    h(
      'p',
      { class: 'muted' },
      'The agent places, reprices and cancels your orders for the coming slots from your site\'s forecast, ',
      'within your limits. You authorise it once; turning it off cancels its open orders and releases their escrow.',
    ),
    h(
      'div',
      { class: 'grid' },
      formBox,
      h('section', { class: 'card wide', 'aria-labelledby': 'activity-title' }, h('h2', { id: 'activity-title' }, 'What the agent did'), activityBox),
    ),
  );
  const refreshActivity = async () => replace(activityBox, activityView(itemsOf(await get('/trading/activity')), symbol));
  const redraw = async () => {
    profileForm(formBox, { app, symbol, sites, profile: await get('/trading/profile'), onSaved: () => { redraw(); refreshActivity(); } });
  };
  await redraw();
  const stops = [every(10000, refreshActivity)];
  return () => stops.forEach((s) => s());
}

function profileForm(box, { app, symbol, sites, profile, onSaved }) {
  const input = (name, value, attrs = {}) => h('input', { name, id: `trading-${name}`, value: value ?? '', ...attrs });
  const site = h(
    'select',
    { name: 'site_id', id: 'trading-site' },
    h('option', { value: '' }, 'No site (buy only)'),
    sites.map((s) => h('option', { value: String(s.id), selected: profile.site_id === s.id }, s.name)),
  );
  const sellFloor = input('sell_floor', profile.sell_floor, { inputmode: 'decimal', placeholder: 'follow the suggestion' });
  const buyCeiling = input('buy_ceiling', profile.buy_ceiling, { inputmode: 'decimal', placeholder: 'follow the suggestion' });
  const reserve = input('reserve_pct', profile.reserve_pct, { type: 'number', min: 0, max: 100 });
  const maxWh = input('max_wh_per_slot', profile.max_wh_per_slot, { type: 'number', min: 1 });
  const use = input('expected_use_wh', profile.expected_use_wh, { type: 'number', min: 0 });
  const limit = input('daily_limit', profile.daily_limit, { inputmode: 'decimal' });
  const message = h('div', { 'aria-live': 'polite' });
  const settings = (enabled) => ({
    enabled,
    site_id: site.value ? Number(site.value) : null,
    sell_floor: sellFloor.value.trim() || null,
    buy_ceiling: buyCeiling.value.trim() || null,
    reserve_pct: Number(reserve.value),
    max_wh_per_slot: Number(maxWh.value),
    expected_use_wh: use.value === '' ? null : Number(use.value),
    daily_limit: limit.value.trim() || '0',
  });
  const save = async (enabled) => {
    try {
      let body = settings(enabled);
      if (enabled) {
        const wallet = await get('/wallets/me');
        if (wallet.kind === 'custodial') {
          const proof = await askPin({ title: 'Enable automatic trading', summary: `Let the agent commit up to ${body.daily_limit} ${symbol} of buy escrow per day` });
          if (!proof) return;
          body = { ...body, ...proof };
        } else {
          const signer = connectedWallet() || (await reconnect());
          if (!signer) return replace(message, notice('warn', 'Connect your linked wallet on the Wallet page first.'));
          const { typed_data: typed } = await post('/trading/profile/typed-data', settings(true));
          body = { ...body, signature: await signer.signTypedData(typed) };
        }
      }
      await api('PUT', '/trading/profile', { body });
      app.announce(enabled ? 'Automatic trading is on.' : 'Automatic trading is off.');
      onSaved();
    } catch (err) {
      replace(message, notice('error', err.message));
    }
  };
  const turnOff = async () => {
    try {
      await api('DELETE', '/trading/profile');
      app.announce('Automatic trading is off; its open orders are cancelled.');
      onSaved();
    } catch (err) {
      replace(message, notice('error', err.message));
    }
  };
  replace(
    box,
    h('h2', { id: 'profile-title' }, 'Trading profile ', badge(profile.enabled ? 'enabled' : 'off')),
    h(
      'form',
      { class: 'form', id: 'trading-profile', onsubmit: (e) => { e.preventDefault(); save(true); } },
      field('Site', site),
      field(`Sell floor (${symbol}/kWh)`, sellFloor, 'empty: follow the price suggestion'),
      field(`Buy ceiling (${symbol}/kWh)`, buyCeiling, 'empty: follow the price suggestion'),
      field('Battery reserve to keep (%)', reserve, '0 to 100'),
      field('Most per slot (Wh)', maxWh),
      field('Expected use per slot (Wh)', use, 'without a site: what you buy each slot'),
      field(`Spending limit per day (${symbol})`, limit, `spent today: ${fmtCoin(profile.spent_today)} ${symbol}; at most your balance`),
      h(
        'div',
        { class: 'row' },
        h('button', { type: 'submit', id: 'trading-enable' }, profile.enabled ? 'Save and re-authorise' : 'Enable'),
        profile.enabled ? h('button', { type: 'button', class: 'secondary', id: 'trading-disable', onclick: turnOff }, 'Turn off') : null,
      ),
      message,
    ),
  );
}

function activityView(items, symbol) {
  return table(
    null,
    [
      { label: 'When', value: (a) => timeEl(a.at, true) },
      { label: 'What', value: (a) => badge(a.action) },
      { label: 'Slot', value: (a) => (a.slot_start ? timeEl(a.slot_start) : '—') },
      { label: 'Side', value: (a) => a.side ?? '—' },
      { label: 'Quantity', num: true, value: (a) => (a.quantity_wh != null ? fmtWh(a.quantity_wh) : '—') },
      { label: `Price (${symbol}/kWh)`, num: true, value: (a) => (a.price != null ? fmtCoin(a.price) : '—') },
      { label: 'Why', value: (a) => a.reason },
    ],
    items,
    'Nothing yet: enable the agent and it acts within a few seconds.',
  );
}
