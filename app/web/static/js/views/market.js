// Market: the order book of a coming slot, a price suggestion next to the price field, placing and
// cancelling orders (buy orders lock escrow, authorised with the wallet PIN like a transfer, or signed by
// the linked browser wallet). The page opens on the slot where the user's orders or the book's activity are.

import { api, get, has, newIdempotencyKey, post } from '../api.js';
import { append, badge, field, fmtCoin, fmtTime, fmtWh, h, itemsOf, notice, pick, replace, table, timeEl } from '../dom.js';
import { every, isAbout } from '../live.js';
import { askWalletSignature } from './browser-wallet.js';
import { askPin, openSlots } from './common.js';

const OPEN = new Set(['pending_authorization', 'open', 'partially_filled', 'partial', 'accepted', 'active']);

export async function render(root, app) {
  const symbol = (app.coin && app.coin.symbol) || 'ENC';
  const rules = has('/market') ? await get('/market').catch(() => ({})) : {};
  const slotMinutes = pick(rules, 'slot_minutes') || 15;
  const gate = pick(rules, 'gate_closure_minutes') ?? 5;
  const sites = has('/sites') && app.user.role === 'prosumer' ? await get('/sites').catch(() => []) : [];

  const slotOptions = () =>
    openSlots({ slotMinutes, gateClosureMinutes: gate, count: 8 }).map((s) =>
      h('option', { value: s.toISOString() }, `${fmtTime(s, false)} – ${fmtTime(new Date(s.getTime() + slotMinutes * 60000), false)}`),
    );
  const slotSelect = h('select', { name: 'slot_start', id: 'slot' }, slotOptions());
  slotSelect.value = await initialSlot([...slotSelect.options].map((o) => o.value));
  // The gate of the first slot closes while the page is open: offer the slots still open.
  const keepSlotsOpen = () => {
    if (Date.parse(slotSelect.options[0].value) - gate * 60000 > Date.now()) return;
    const chosen = slotSelect.value;
    replace(slotSelect, slotOptions());
    if ([...slotSelect.options].some((o) => o.value === chosen)) slotSelect.value = chosen;
    else formBox.dispatchEvent(new Event('slotchange'));
  };
  const bookBox = h('div', { id: 'book' });
  const ordersBox = h('div', { id: 'my-orders' });
  const formBox = h('section', { class: 'card', 'aria-labelledby': 'place-title' });
  append(root, [
    h('h1', {}, 'Market'),
    h(
      'p',
      { class: 'muted' },
      `Delivery slots of ${slotMinutes} minutes; orders close ${gate} minutes before a slot starts.`,
      rules.mechanism ? ` Matching: ${String(rules.mechanism).replaceAll('_', ' ')}.` : '',
    ),
    app.user.status === 'pending' ? notice('warn', 'You can trade once an operator has approved your account.') : null,
    h('div', { class: 'row' }, field('Delivery slot', slotSelect)),
    h(
      'div',
      { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'book-title' }, h('h2', { id: 'book-title' }, 'Order book'), bookBox),
      formBox,
      h('section', { class: 'card wide', 'aria-labelledby': 'orders-title' }, h('h2', { id: 'orders-title' }, 'My orders'), ordersBox),
    ),
  ]);

  const refreshBook = async () => {
    keepSlotsOpen();
    if (!has('/market/book')) return replace(bookBox, h('p', { class: 'muted' }, 'The order book is not available yet.'));
    replace(bookBox, bookView(await get('/market/book', { slot_start: slotSelect.value }), symbol));
  };
  const refreshOrders = async () => {
    if (!has('/orders')) return replace(ordersBox, h('p', { class: 'muted' }, 'Orders are not available yet.'));
    const since = Date.now() - slotMinutes * 60000;
    const orders = itemsOf(await get('/orders')).filter((o) => !o.slot_start || Date.parse(o.slot_start) >= since);
    replace(ordersBox, ordersView(orders, symbol, async (order) => {
      try {
        await api('DELETE', `/orders/${order.id}`);
        app.announce('Order cancelled; its escrow is released.');
      } catch (err) {
        app.announce(`Could not cancel: ${err.message}`, 'error');
      }
      refreshOrders();
      refreshBook();
    }));
  };
  orderForm(formBox, { app, symbol, slotSelect, sites, onPlaced: () => { refreshOrders(); refreshBook(); } });
  slotSelect.addEventListener('change', () => {
    refreshBook();
    formBox.dispatchEvent(new Event('slotchange'));
  });

  const stops = [every(5000, refreshBook), every(5000, refreshOrders)];
  if (app.stream) {
    stops.push(app.stream.subscribe((e) => {
      if (isAbout(e, 'order', 'trade', 'match')) {
        refreshOrders();
        refreshBook();
      }
    }));
  }
  return () => stops.forEach((s) => s());
}

/**
 * The slot to open on: the first coming slot holding one of the user's open orders, else the nearest one
 * with orders in the book, else the first open slot.
 */
async function initialSlot(slots) {
  const mine = has('/orders') ? itemsOf(await get('/orders').catch(() => [])) : [];
  const same = (a, b) => Date.parse(a) === Date.parse(b);
  const withMine = slots.find((s) => mine.some((o) => OPEN.has(o.status) && same(o.slot_start, s)));
  if (withMine) return withMine;
  if (has('/market/book')) {
    const books = await Promise.all(slots.map((s) => get('/market/book', { slot_start: s }).catch(() => null)));
    const busy = slots.find((_, i) => books[i] && (books[i].bids.length || books[i].asks.length));
    if (busy) return busy;
  }
  return slots[0];
}

function bookView(book, symbol) {
  const floor = pick(book, 'floor', 'band.floor');
  const ceiling = pick(book, 'ceiling', 'band.ceiling');
  const side = (...names) => pick(book, ...names) || [];
  const bids = side('bids', 'buy', 'buys', 'levels.buy');
  const asks = side('asks', 'sell', 'sells', 'levels.sell');
  const cols = [
    { label: `Price (${symbol}/kWh)`, num: true, value: (l) => fmtCoin(pick(l, 'price', 'limit_price'), '') },
    { label: 'Quantity', num: true, value: (l) => fmtWh(pick(l, 'quantity_wh', 'open_wh', 'quantity')) },
  ];
  return h(
    'div',
    { class: 'stack' },
    floor !== undefined
      ? h(
          'p',
          { class: 'small', id: 'price-band' },
          'Price band: ',
          h('strong', {}, fmtCoin(floor)),
          ' (feed-in price) to ',
          h('strong', {}, fmtCoin(ceiling)),
          ` (top retail tier) ${symbol}/kWh. Orders outside it are refused.`,
        )
      : null,
    h(
      'div',
      { class: 'book' },
      h('div', {}, h('h3', {}, 'Buy (bids)'), table(null, cols, bids, 'No buy orders.')),
      h('div', {}, h('h3', {}, 'Sell (asks)'), table(null, cols, asks, 'No sell orders.')),
    ),
  );
}

function ordersView(orders, symbol, cancel) {
  return table(
    null,
    [
      { label: 'Slot', value: (o) => timeEl(o.slot_start) },
      { label: 'Side', value: (o) => o.side },
      { label: 'Quantity', num: true, value: (o) => fmtWh(o.quantity_wh) },
      { label: 'Filled', num: true, value: (o) => fmtWh(pick(o, 'filled_wh', 'matched_wh')) },
      { label: `Limit (${symbol}/kWh)`, num: true, value: (o) => fmtCoin(o.limit_price) },
      { label: 'Status', value: (o) => [badge(o.status), o.failure_reason ? h('span', { class: 'muted small' }, ` ${o.failure_reason}`) : null] },
      { label: 'Escrow', value: (o) => (o.side === 'buy' && o.escrow_status ? `${fmtCoin(o.escrow_amount)} ${String(o.escrow_status).replaceAll('_', ' ')}` : '—') },
      {
        label: 'Action',
        value: (o) =>
          OPEN.has(o.status) && has('/orders/{}', 'delete')
            ? h('button', { type: 'button', class: 'secondary small', 'aria-label': `Cancel order ${o.id}`, onclick: (e) => { e.target.disabled = true; cancel(o); } }, 'Cancel')
            : '',
      },
    ],
    orders,
    'No orders for the coming slots.',
  );
}

function orderForm(box, { app, symbol, slotSelect, sites, onPlaced }) {
  const canSell = app.user.role === 'prosumer' && sites.length > 0;
  const sideBuy = h('input', { type: 'radio', name: 'side', value: 'buy', checked: true });
  const sideSell = h('input', { type: 'radio', name: 'side', value: 'sell', disabled: !canSell });
  const quantity = h('input', { name: 'quantity_wh', type: 'number', min: 1, step: 1, required: true, inputmode: 'numeric' });
  const price = h('input', { name: 'limit_price', required: true, inputmode: 'decimal', pattern: '\\d+(\\.\\d{1,18})?', autocomplete: 'off' });
  const suggestion = h('div', { class: 'aside', id: 'price-suggestion', 'aria-live': 'polite' });
  const site = h('select', { name: 'site_id' }, sites.map((s) => h('option', { value: s.id }, s.name)));
  const siteField = field('From site', site);
  const message = h('div', { 'aria-live': 'polite', id: 'order-message' });
  const submit = h('button', { type: 'submit' }, 'Place order');
  const side = () => (sideSell.checked ? 'sell' : 'buy');

  const suggest = async () => {
    siteField.hidden = side() !== 'sell';
    if (!has('/market/price')) return replace(suggestion);
    try {
      const p = await get('/market/price', { slot_start: slotSelect.value, side: side() });
      const value = pick(p, 'suggested_price', 'suggested', 'suggestion.price', 'price');
      const retail = pick(p, 'retail_price');
      replace(
        suggestion,
        value !== undefined
          ? [
              'Suggested: ',
              h('strong', { id: 'suggested-price' }, `${value} ${symbol}/kWh`),
              ' ',
              h('button', { type: 'button', class: 'secondary small', onclick: () => { price.value = String(value); price.focus(); } }, 'Use'),
            ]
          : null,
        retail !== undefined
          ? h(
              'div',
              { id: 'your-tier', title: p.explanation || '' },
              `Your retail price now: ${fmtCoin(retail)} ${symbol}/kWh (tier ${p.tariff_tier}, ${p.month_kwh_so_far} kWh used this month). `,
              'The suggestion stays between the feed-in price and it: buying above it costs more than the grid.',
            )
          : null,
      );
    } catch (err) {
      replace(suggestion, `No suggestion: ${err.message}`);
    }
  };

  const form = h(
    'form',
    { class: 'form' },
    h('fieldset', {}, h('legend', {}, 'Side'), h('label', {}, sideBuy, 'Buy'), h('label', {}, sideSell, 'Sell')),
    canSell ? null : h('p', { class: 'muted small' }, app.user.role === 'prosumer' ? 'Register a site to sell.' : 'Consumers buy only.'),
    siteField,
    field('Quantity (Wh)', quantity, 'Energy for the selected slot'),
    h('div', { class: 'field-with-aside' }, field(`Limit price (${symbol}/kWh)`, price), suggestion),
    message,
    h('div', { class: 'row' }, submit),
  );
  let key = null;
  form.addEventListener('input', () => {
    key = null;
  });
  form.addEventListener('change', (e) => {
    if (e.target.name === 'side') suggest();
  });
  box.addEventListener('slotchange', () => {
    key = null;
    suggest();
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    replace(message);
    submit.disabled = true;
    key = key || newIdempotencyKey();
    try {
      const body = {
        side: side(),
        slot_start: slotSelect.value,
        quantity_wh: Number(quantity.value),
        limit_price: price.value.trim(),
      };
      if (body.side === 'sell') body.site_id = Number(site.value);
      let order = await api('POST', '/orders', { body, idempotencyKey: key });
      order = await get(`/orders/${order.id}`); // a replay answers with the first response: read it now
      if (order.status === 'failed') {
        key = null; // the replayed order expired meanwhile: the next press places a new one
        replace(message, notice('error', `That order failed: ${order.failure_reason || 'its authorization window passed'}. Press Place order again for a new one.`));
        return;
      }
      if (order.status === 'pending_authorization') {
        const ch = order.challenge || {};
        let proof = null;
        if (ch.type === 'signature') {
          const wallet = await get('/wallets/me');
          const signature = await askWalletSignature(app, { title: 'Sign the escrow', typed: ch.typed_data, linkedAddress: wallet.address });
          proof = signature ? { signature } : null;
        } else {
          proof = await askPin({
            title: 'Authorize escrow',
            summary: `Lock up to ${fmtCoin(pick(order, 'escrow', 'escrow_amount') ?? '')} ${symbol} for this buy order`,
            otpRequired: ch.otp_required,
          });
        }
        if (!proof) {
          replace(message, notice('warn', 'Not authorized: the order stays out of the book. Press Place order again to authorize the same order.'));
          onPlaced();
          return;
        }
        order = await post(`/orders/${order.id}/authorize`, proof);
      }
      key = null;
      const what = `${order.side} ${fmtWh(order.quantity_wh)} at ${fmtCoin(order.limit_price)} ${symbol}/kWh`;
      replace(
        message,
        notice(
          'ok',
          order.status === 'pending_authorization'
            ? `Order placed: ${what}. It is in the book; coins are locked on chain only for what it matches.`
            : `Order placed: ${what} (${String(order.status).replaceAll('_', ' ')}).`,
        ),
      );
      form.reset();
      onPlaced();
      suggest();
    } catch (err) {
      if (err.name === 'WalletError' && err.rejected) {
        replace(message, notice('warn', `${err.message} No coins are locked; press Place order again to sign the same order.`));
      } else {
        if (err.status === 409 || err.status === 422) key = null;
        replace(message, notice('error', err.message));
      }
      onPlaced();
    } finally {
      submit.disabled = false;
    }
  });
  replace(box, h('h2', { id: 'place-title' }, 'Place an order'), form);
  suggest();
}

