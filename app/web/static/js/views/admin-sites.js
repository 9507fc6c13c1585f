// Operator: every site with its status, latest values and open faults; enable or disable a site.

import { get, has, post } from '../api.js';
import { badge, fmtPct, fmtW, h, replace, table, timeEl } from '../dom.js';
import { every } from '../live.js';

export async function render(root, app) {
  const box = h('div', { id: 'all-sites' });
  const summary = h('p', { class: 'muted', id: 'sites-summary' });
  root.append(h('h1', {}, 'Sites'), summary, h('section', { class: 'card' }, box));

  const toggle = async (site, button) => {
    button.disabled = true;
    const action = site.enabled ? 'disable' : 'enable';
    try {
      await post(`/admin/sites/${site.id}/${action}`, {});
      app.announce(`${site.name} ${action}d.`);
    } catch (err) {
      app.announce(`Could not ${action} ${site.name}: ${err.message}`, 'error');
    }
    refresh();
  };

  const refresh = async () => {
    const sites = await get('/sites');
    const details = await Promise.all(sites.map((s) => get(`/sites/${s.id}`)));
    const counts = details.reduce((acc, d) => ({ ...acc, [d.status]: (acc[d.status] || 0) + 1 }), {});
    replace(summary, `${details.length} sites: ${Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(', ') || 'none'}.`);
    replace(
      box,
      table(
        null,
        [
          { label: 'Site', value: (d) => h('span', {}, h('strong', {}, d.name), h('span', { class: 'muted small' }, ` #${d.id}`)) },
          { label: 'Owner', num: true, value: (d) => d.owner_id },
          { label: 'Status', value: (d) => badge(d.status) },
          { label: 'Last seen', value: (d) => (d.last_seen_at ? timeEl(d.last_seen_at, true) : '—') },
          { label: 'PV', num: true, value: (d) => fmtW(d.last_reading && d.last_reading.pv_w) },
          { label: 'Load', num: true, value: (d) => fmtW(d.last_reading && d.last_reading.load_w) },
          { label: 'SoC', num: true, value: (d) => fmtPct(d.last_reading && d.last_reading.soc_pct) },
          {
            label: 'Open faults',
            value: (d) =>
              d.open_faults.length
                ? h('ul', { class: 'plain' }, d.open_faults.map((f) => h('li', {}, badge('fault'), ` ${f.kind.replaceAll('_', ' ')} since `, timeEl(f.opened_at))))
                : h('span', { class: 'muted' }, 'none'),
          },
          {
            label: 'Action',
            value: (d) =>
              has(`/admin/sites/{}/${d.enabled ? 'disable' : 'enable'}`, 'post')
                ? h('button', { type: 'button', class: 'secondary small', onclick: (e) => toggle(d, e.currentTarget) }, d.enabled ? 'Disable' : 'Enable')
                : '',
          },
        ],
        details,
        'No sites registered yet.',
      ),
    );
  };
  return every(10000, refresh);
}
