// Building DOM without innerHTML (so no value from the API is ever parsed as markup), and formatting.

/**
 * h('p', {class: 'x', onclick: fn}, 'text', child) -> element. Attributes named on* become listeners;
 * `false`/`null` attributes are left out; children may be strings, nodes, arrays, null or undefined.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let uid = 0;
/** A unique id for label/description wiring. */
export function nextId(prefix = 'f') {
  uid += 1;
  return `${prefix}-${uid}`;
}

/**
 * A labelled form field: <div class=field><label for=id>Text</label> input <span class=hint></span></div>.
 * The hint describes the input (aria-describedby) without becoming part of its name.
 */
export function field(text, input, hint) {
  if (!input.id) input.id = nextId('in');
  const hintEl = hint ? h('span', { class: 'hint', id: nextId('hint') }, hint) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: input.id }, text), input, hintEl);
}

export function notice(kind, ...children) {
  return h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...children);
}

export function badge(value) {
  const text = String(value ?? 'unknown');
  return h('span', { class: `badge ${text.replace(/[^a-z_]/gi, '')}` }, text.replaceAll('_', ' '));
}

/**
 * A table from rows and column specs [{label, value: row => node|string, num?: bool}]. On a phone each
 * row becomes a small card whose cells carry their column's label (data-label), so nothing scrolls away.
 */
export function table(caption, columns, rows, empty = 'Nothing yet.') {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h(
    'div',
    { class: 'table-wrap stackable' },
    h(
      'table',
      {},
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)))),
      h(
        'tbody',
        {},
        rows.map((row) => h('tr', {}, columns.map((c) => h('td', { class: c.num ? 'num' : null, 'data-label': c.label || null }, c.value(row))))),
      ),
    ),
  );
}

// -- formatting ---------------------------------------------------------------------------------

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const timeShort = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

export function fmtDateTime(value) {
  if (!value) return '—';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : dateTime.format(d);
}

export function fmtTime(value, seconds = true) {
  if (!value) return '—';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : (seconds ? timeOnly : timeShort).format(d);
}

export function timeEl(value, seconds = false) {
  return h('time', { datetime: value || '' }, seconds ? fmtTime(value) : fmtDateTime(value));
}

/** Coin amounts arrive as decimal strings with up to 18 decimals: shorten for reading, keep exact in title. */
export function fmtCoin(value, symbol = '') {
  if (value === null || value === undefined || value === '') return '—';
  const text = String(value);
  const [whole, frac = ''] = text.split('.');
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const shortFrac = frac.slice(0, 4).replace(/0+$/, '');
  return `${grouped}${shortFrac ? `.${shortFrac}` : ''}${symbol ? ` ${symbol}` : ''}`;
}

export function fmtWh(wh) {
  if (wh === null || wh === undefined) return '—';
  const n = Number(wh);
  if (Math.abs(n) >= 10000) return `${(n / 1000).toFixed(1)} kWh`;
  return `${Math.round(n).toLocaleString()} Wh`;
}

export function fmtW(w) {
  if (w === null || w === undefined) return '—';
  const n = Number(w);
  if (Math.abs(n) >= 10000) return `${(n / 1000).toFixed(1)} kW`;
  return `${Math.round(n).toLocaleString()} W`;
}

export function fmtPct(p) {
  return p === null || p === undefined ? '—' : `${Number(p).toFixed(1)} %`;
}

export function shortHash(hash) {
  if (!hash) return '—';
  return hash.length > 14 ? `${hash.slice(0, 8)}…${hash.slice(-6)}` : hash;
}

/** Lists come as arrays or as {items: [...]}: accept both. */
export function itemsOf(answer) {
  if (Array.isArray(answer)) return answer;
  if (answer && Array.isArray(answer.items)) return answer.items;
  return [];
}

/** The first present field of an object among several candidate names (APIs still settling). */
export function pick(obj, ...names) {
  for (const name of names) {
    const value = name.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
    if (value !== undefined && value !== null) return value;
  }
  return undefined;
}
