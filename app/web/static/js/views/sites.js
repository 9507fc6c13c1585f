// Energy: each of the user's sites with live power (PV, load, grid, battery), SoC, today's and this
// month's energy, and open faults. Readings are polled every few seconds; stream events trigger a poll
// at once when the event stream exists.

import { get, has, post } from '../api.js';
import { badge, field, fmtPct, fmtTime, fmtW, fmtWh, h, notice, replace, table, timeEl } from '../dom.js';
import { chartBox, timeChart } from '../chart.js';
import { every, isAbout } from '../live.js';

const WINDOW_S = 30 * 60; // the live chart shows the last half hour
// Load is drawn last and dashed: when the battery covers the whole load the two lines coincide.
const SERIES = [
  { key: 'pv_w', label: 'PV', color: '--pv', scale: 'W' },
  { key: 'grid_w', label: 'Grid (+ import)', color: '--grid', scale: 'W' },
  { key: 'battery_w', label: 'Battery (+ discharge)', color: '--battery', scale: 'W' },
  { key: 'load_w', label: 'Load', color: '--load', scale: 'W', dash: [8, 5] },
  { key: 'soc_pct', label: 'SoC', color: '--soc', scale: '%' },
];
const COUNTERS = [
  ['pv_wh', 'Produced'],
  ['load_wh', 'Consumed'],
  ['export_wh', 'Exported'],
  ['import_wh', 'Imported'],
];

export async function render(root, app) {
  root.append(h('h1', {}, 'Energy'));
  if (app.user.role === 'consumer') {
    root.append(await consumerView(app));
    return () => {};
  }
  if (!has('/sites')) {
    root.append(noSites('Site monitoring is not available on this server yet.'));
    return () => {};
  }
  const sites = await get('/sites');
  const list = h('div', { class: 'stack' });
  root.append(list);
  if (!sites.length) list.append(noSites('Register your ESS installation to see its production and consumption live.'));
  if (has('/sites', 'post')) root.append(registerForm(app, () => window.dispatchEvent(new HashChangeEvent('hashchange'))));

  const panels = [];
  for (const site of sites) {
    const panel = await sitePanel(site, app);
    list.append(panel.el);
    panels.push(panel);
  }
  const stopStream = app.stream
    ? app.stream.subscribe((event) => {
        if (!isAbout(event, 'reading', 'fault', 'site')) return;
        const siteId = event.data && (event.data.site_id ?? (event.data.site && event.data.site.id));
        for (const p of panels) if (siteId === undefined || siteId === p.site.id) p.poke(isAbout(event, 'fault'));
      })
    : () => {};
  return () => {
    stopStream();
    panels.forEach((p) => p.stop());
  };
}

function noSites(text) {
  return h('section', { class: 'card', id: 'no-sites' }, h('h2', {}, 'No sites yet'), h('p', { class: 'muted' }, text));
}

async function sitePanel(site, app) {
  const titleId = `site-${site.id}-title`;
  const status = h('span', {}, badge(site.status));
  const seen = h('span', { class: 'muted small' });
  const stats = h('dl', { class: 'stats', 'aria-label': `Live values of ${site.name}` });
  const chartEl = chartBox(`Power and state of charge of ${site.name} over the last 30 minutes`);
  const energy = h('div', {});
  const faults = h('div', {});
  const el = h(
    'section',
    { class: 'card stack', 'aria-labelledby': titleId, dataset: { site: site.id } },
    h('div', { class: 'spread' }, h('h2', { id: titleId }, site.name), h('span', { class: 'row' }, status, seen)),
    h(
      'p',
      { class: 'muted small' },
      `PV ${fmtW(site.pv_nameplate_w)} peak · battery ${fmtWh(site.battery_capacity_wh)} · reserve ${site.reserve_soc_pct} %`,
    ),
    stats,
    chartEl,
    h('div', { class: 'grid' }, h('div', {}, h('h3', {}, 'Energy'), energy), h('div', {}, h('h3', {}, 'Open faults'), faults)),
  );

  let chart = null;
  try {
    chart = await timeChart(chartEl, { series: SERIES, height: 260 });
  } catch (err) {
    console.warn('chart library unavailable', err);
    replace(chartEl, h('p', { class: 'muted' }, 'Charts are unavailable; the live values above still update.'));
  }

  let readings = []; // oldest first
  const pollReadings = async () => {
    const since = readings.length ? readings[readings.length - 1].ts : new Date(Date.now() - WINDOW_S * 1000).toISOString();
    const fresh = (await get(`/sites/${site.id}/readings`, { limit: 720, from: since })).reverse();
    const known = new Set(readings.map((r) => r.ts));
    readings = readings.concat(fresh.filter((r) => !known.has(r.ts)));
    const cutoff = Date.now() / 1000 - WINDOW_S;
    readings = readings.filter((r) => Date.parse(r.ts) / 1000 >= cutoff);
    showStats(stats, readings[readings.length - 1]);
    if (chart) chart.setData([readings.map((r) => Date.parse(r.ts) / 1000), ...SERIES.map((s) => readings.map((r) => r[s.key]))]);
    el.dataset.readings = String(readings.length);
  };
  const pollDetail = async () => {
    const detail = await get(`/sites/${site.id}`);
    replace(status, badge(detail.status));
    replace(seen, detail.last_seen_at ? ['last seen ', timeEl(detail.last_seen_at, true)] : 'not seen yet');
    replace(faults, faultList(detail.open_faults || []));
  };
  const pollEnergy = async () => replace(energy, await energySummary(site));

  const stops = [every(5000, pollReadings), every(10000, pollDetail), every(15000, pollEnergy)];
  return {
    el,
    site,
    poke: (fault) => (fault ? pollDetail() : pollReadings()),
    stop: () => {
      stops.forEach((s) => s());
      if (chart) chart.destroy();
    },
  };
}

function showStats(stats, r) {
  const rows = [
    ['PV', r ? fmtW(r.pv_w) : '—'],
    ['Load', r ? fmtW(r.load_w) : '—'],
    ['Grid', r ? gridText(r.grid_w) : '—'],
    ['Battery', r ? batteryText(r.battery_w) : '—'],
    ['State of charge', r ? fmtPct(r.soc_pct) : '—'],
  ];
  replace(stats, rows.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
  stats.dataset.ts = r ? r.ts : '';
}

function gridText(w) {
  if (w === null || w === undefined) return '—';
  return w >= 0 ? `${fmtW(w)} import` : `${fmtW(-w)} export`;
}

function batteryText(w) {
  if (w === null || w === undefined) return '—';
  if (w === 0) return 'idle';
  return w > 0 ? `${fmtW(w)} discharging` : `${fmtW(-w)} charging`;
}

/**
 * Today's and this month's energy: the finished slots' energies, plus the part since the last finished
 * slot (the running slot) from the meter counters of the readings, so energy flowing now is counted now.
 */
async function energySummary(site) {
  const now = new Date();
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  const month = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
  const slots = await get(`/sites/${site.id}/slots`, { from: month, limit: 3000 });
  const sum = (rows, key) => rows.reduce((acc, s) => acc + (s[key] || 0), 0);
  const todays = slots.filter((s) => Date.parse(s.slot_start) >= today);
  const ends = slots.map((s) => Date.parse(s.slot_start) + s.slot_minutes * 60000);
  const since = Math.max(today, ...ends);
  const running = await runningEnergy(site, since);
  const cell = (closed, key) => {
    if (running === null) return fmtWh(closed);
    const part = running[key];
    return part === null ? `${fmtWh(closed)} + ?` : fmtWh(closed + part);
  };
  return h(
    'div',
    { class: 'stack', dataset: { runningSince: new Date(since).toISOString() } },
    table(
      null,
      [
        { label: '', value: (r) => r[1] },
        { label: 'Today (UTC)', num: true, value: (r) => h('span', { dataset: { energy: `today-${r[0]}` } }, cell(sum(todays, r[0]), r[0])) },
        { label: 'This month', num: true, value: (r) => cell(sum(slots, r[0]), r[0]) },
      ],
      COUNTERS,
    ),
    running === null
      ? null
      : h('p', { class: 'muted small', id: `running-note-${site.id}` }, `Includes the running slot since ${fmtTime(new Date(since), false)} from the meter counters; final once the slot is closed.`),
  );
}

/** Energy since `since` (ms) from the counters: the newest reading minus the one at (or just after) it. */
async function runningEnergy(site, since) {
  const [latest] = await get(`/sites/${site.id}/readings`, { limit: 1 });
  if (!latest || Date.parse(latest.ts) <= since) return null;
  const [before] = await get(`/sites/${site.id}/readings`, { limit: 1, to: new Date(since + 1).toISOString() });
  let base = before && Date.parse(before.ts) > since - 5 * 60000 ? before : null;
  if (!base) {
    // No reading at the start (the site came online later): the oldest one since, among the latest 5000.
    const after = await get(`/sites/${site.id}/readings`, { limit: 5000, from: new Date(since).toISOString() });
    base = after[after.length - 1];
  }
  const out = {};
  for (const [key] of COUNTERS) {
    const delta = latest[key] == null || base[key] == null ? null : latest[key] - base[key];
    out[key] = delta === null || delta < 0 ? null : delta; // a counter reset is not negative energy
  }
  return out;
}

/** A consumer has no site: what they can do here instead, and what they bought this month. */
async function consumerView(app) {
  const box = h('section', { class: 'card stack', id: 'consumer-energy', 'aria-labelledby': 'consumer-title' });
  const month = new Date().toISOString().slice(0, 7);
  const statement = has('/statements') ? await get('/statements', { month }).catch(() => null) : null;
  const link = (path, text) => (document.querySelector(`#nav a[href="#${path}"]`) ? h('a', { href: `#${path}` }, text) : null);
  replace(
    box,
    h('h2', { id: 'consumer-title' }, 'Your energy comes from your neighbours'),
    h('p', {}, 'As a consumer you have no battery or solar site to watch here. You buy energy for the coming 15-minute slots, paid in coins from your wallet and settled on what the sellers’ meters measured.'),
    statement
      ? h(
          'dl',
          { class: 'kv', id: 'consumer-month' },
          h('dt', {}, 'Bought this month (settled)'),
          h('dd', {}, fmtWh(statement.bought_wh)),
          h('dt', {}, 'Waiting for settlement'),
          h('dd', {}, fmtWh(statement.pending ? statement.pending.bought_wh : 0)),
        )
      : null,
    h('ul', {}, [link('/market', 'Buy energy on the Market page'), link('/trades', 'Follow your trades'), link('/statements', 'Read your monthly statement')].filter(Boolean).map((a) => h('li', {}, a))),
    h('p', { class: 'muted small' }, 'Have solar panels or a battery? Selling needs a prosumer account with a registered site: create a prosumer account, and an operator approves it.'),
  );
  return box;
}

function faultList(faults) {
  if (!faults.length) return h('p', { class: 'muted' }, 'None.');
  return h(
    'ul',
    { class: 'plain stack' },
    faults.map((f) =>
      h('li', { dataset: { fault: f.kind } }, badge('fault'), ' ', h('strong', {}, f.kind.replaceAll('_', ' ')), ' since ', timeEl(f.opened_at), f.detail ? h('span', { class: 'muted small' }, ` · ${f.detail}`) : null),
    ),
  );
}

function registerForm(app, done) {
  const input = (name, attrs = {}) => h('input', { name, required: true, autocomplete: 'off', ...attrs });
  const name = input('name', { maxlength: 100 });
  const host = input('host', { spellcheck: 'false' });
  const port = input('port', { type: 'number', min: 1, max: 65535, value: 502 });
  const device = input('device_id', { type: 'number', min: 1, max: 255, value: 1 });
  const pv = input('pv_nameplate_w', { type: 'number', min: 1 });
  const battery = input('battery_capacity_wh', { type: 'number', min: 0 });
  const reserve = input('reserve_soc_pct', { type: 'number', min: 0, max: 100, value: 10 });
  const message = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit' }, 'Register site');
  const form = h(
    'form',
    { class: 'form' },
    field('Name', name),
    field('Host', host, 'IP address or host name of the site’s Modbus TCP gateway'),
    field('Port', port),
    field('Modbus unit id', device),
    field('PV nameplate (W)', pv),
    field('Battery capacity (Wh)', battery),
    field('Battery reserve (%)', reserve),
    message,
    h('div', { class: 'row' }, submit),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    submit.disabled = true;
    try {
      await post('/sites', {
        name: name.value.trim(),
        host: host.value.trim(),
        port: Number(port.value),
        device_id: Number(device.value),
        pv_nameplate_w: Number(pv.value),
        battery_capacity_wh: Number(battery.value),
        reserve_soc_pct: Number(reserve.value),
      });
      app.announce('Site registered.');
      done();
    } catch (err) {
      replace(message, notice('error', err.message));
      submit.disabled = false;
    }
  });
  return h('details', { class: 'card' }, h('summary', {}, 'Register a site'), form);
}
