// Operator: anchored ledger slots (Merkle root, record count, energy totals) linked to their transactions.
// One call: GET /ledger/slots lists the last day's ledger records, newest first.

import { get } from '../api.js';
import { badge, fmtWh, h, replace, shortHash, table, timeEl } from '../dom.js';
import { every } from '../live.js';
import { txLink } from './common.js';

const MAX_SLOTS = 24;

export async function render(root, app) {
  const chainId = app.coin && app.coin.chain_id;
  const box = h('div', { id: 'ledger' });
  root.append(
    h('h1', {}, 'Ledger'),
    h('p', { class: 'muted' }, 'Each finished slot’s meter data is committed on chain as one Merkle root; anyone can check a reading against it with its proof.'),
    h('section', { class: 'card' }, box),
  );
  const refresh = async () => {
    const since = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
    const records = await get('/ledger/slots', { from: since, limit: MAX_SLOTS });
    replace(
      box,
      table(
        null,
        [
          { label: 'Slot', value: (r) => timeEl(r.slot_start) },
          { label: 'Status', value: (r) => badge(r.status) },
          { label: 'Records', num: true, value: (r) => r.count },
          { label: 'PV', num: true, value: (r) => fmtWh(r.totals_wh && r.totals_wh.pv_wh) },
          { label: 'Export', num: true, value: (r) => fmtWh(r.totals_wh && r.totals_wh.export_wh) },
          { label: 'Import', num: true, value: (r) => fmtWh(r.totals_wh && r.totals_wh.import_wh) },
          { label: 'Root', value: (r) => h('code', { title: r.root || '' }, shortHash(r.root)) },
          { label: 'Transaction', value: (r) => txLink(r.tx_hash, chainId) },
          { label: 'Block', num: true, value: (r) => r.block_number ?? '—' },
        ],
        records,
        'No slot has been anchored in the last 24 hours.',
      ),
    );
  };
  return every(30000, refresh);
}
