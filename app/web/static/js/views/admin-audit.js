// Operator: the append-only audit log, with whether its hash chain is intact.

import { get } from '../api.js';
import { badge, h, notice, replace, shortHash, table, timeEl } from '../dom.js';
import { every } from '../live.js';

export async function render(root) {
  const integrity = h('div', { id: 'audit-integrity', 'aria-live': 'polite' });
  const box = h('div', { id: 'audit' });
  root.append(h('h1', {}, 'Audit log'), integrity, h('section', { class: 'card' }, box));
  const refresh = async () => {
    const page = await get('/admin/audit', { limit: 100 });
    replace(
      integrity,
      page.chain_intact
        ? notice('ok', 'Hash chain intact: no entry was changed or removed.')
        : notice('error', `Hash chain broken at entry ${page.first_broken_seq}: the log was altered.`),
    );
    integrity.dataset.intact = String(page.chain_intact);
    replace(
      box,
      table(
        null,
        [
          { label: '#', num: true, value: (e) => e.seq },
          { label: 'When', value: (e) => timeEl(e.at) },
          { label: 'Who', value: (e) => e.actor_email || (e.actor_id ? `user ${e.actor_id}` : 'system') },
          { label: 'Action', value: (e) => h('code', {}, e.action) },
          { label: 'Target', value: (e) => (e.target ? h('span', { title: e.target }, shorten(e.target)) : '—') },
          { label: 'Outcome', value: (e) => badge(e.outcome) },
          { label: 'Details', value: (e) => details(e.details) },
          { label: 'Hash', value: (e) => h('code', { title: e.hash }, shortHash(e.hash)) },
        ],
        page.items,
        'The log is empty.',
      ),
    );
  };
  return every(10000, refresh);
}

function details(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return '—';
  const text = entries.map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : shorten(String(v))}`);
  return h('span', { class: 'small', title: JSON.stringify(obj) }, text.join(' · '));
}

/** Addresses and hashes in a table cell: the ends are enough to recognise them (the title has all). */
function shorten(text) {
  return text.replace(/0x[0-9a-fA-F]{40,}/g, (hex) => shortHash(hex));
}
