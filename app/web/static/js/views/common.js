// Pieces several views share: the PIN/OTP prompt, a transfer's step timeline, explorer links.

import { field, fmtTime, h, shortHash } from '../dom.js';

/**
 * Asks for the wallet PIN (and a TOTP code when the challenge needs one) in a modal dialog.
 * Resolves {pin, otp} or null when cancelled. Escape cancels; focus returns to the opener.
 */
export function askPin({ title = 'Authorize', summary = '', otpRequired = false } = {}) {
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const pin = h('input', {
      type: 'password',
      name: 'pin',
      inputmode: 'numeric',
      pattern: '\\d{4,12}',
      autocomplete: 'off',
      required: true,
      minlength: 4,
      maxlength: 12,
    });
    const otp = otpRequired
      ? h('input', {
          name: 'otp',
          inputmode: 'numeric',
          pattern: '\\d{6}',
          autocomplete: 'one-time-code',
          required: true,
          maxlength: 6,
        })
      : null;
    const dialog = h(
      'dialog',
      { 'aria-labelledby': 'pin-title' },
      h(
        'form',
        { method: 'dialog', class: 'form' },
        h('h2', { id: 'pin-title' }, title),
        summary ? h('p', {}, summary) : null,
        field('Wallet PIN', pin, '4 to 12 digits'),
        otp ? field('Authenticator code', otp, '6 digits from your authenticator app') : null,
        h(
          'div',
          { class: 'row' },
          h('button', { type: 'submit', value: 'ok' }, 'Authorize'),
          h('button', { type: 'button', class: 'secondary', value: 'cancel', onclick: () => dialog.close('cancel') }, 'Cancel'),
        ),
      ),
    );
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'ok';
      dialog.remove();
      if (opener && opener.focus) opener.focus();
      resolve(ok ? { pin: pin.value, otp: otp ? otp.value : undefined } : null);
    });
    document.body.append(dialog);
    dialog.showModal();
    pin.focus();
  });
}

const TRANSFER_STEPS = ['requested', 'challenge_issued', 'authorized', 'signed', 'submitted', 'mined', 'confirmed'];
const STEP_LABEL = {
  requested: 'Requested',
  challenge_issued: 'Challenge issued',
  authorized: 'Authorized',
  signed: 'Signed',
  submitted: 'Submitted to the chain',
  mined: 'Mined',
  confirmed: 'Confirmed',
  failed: 'Failed',
  requeued: 'Re-queued',
};

/** The recorded steps of a transfer, followed by the steps still to come (greyed). */
export function timeline(transfer) {
  const steps = transfer.steps || [];
  const seen = new Set(steps.map((s) => s.kind));
  const finished = seen.has('confirmed') || seen.has('failed');
  const upcoming = finished ? [] : TRANSFER_STEPS.filter((k) => !seen.has(k));
  return h(
    'ol',
    { class: 'timeline', 'aria-label': `Steps of transfer ${transfer.id}` },
    steps.map((s) =>
      h(
        'li',
        { class: s.kind === 'failed' ? 'failed' : 'done', dataset: { step: s.kind } },
        h('strong', {}, STEP_LABEL[s.kind] || s.kind),
        h('time', { class: 'when', datetime: s.at }, fmtTime(s.at)),
        stepDetail(s),
      ),
    ),
    upcoming.map((k) =>
      h('li', { class: 'pending', dataset: { step: k } }, h('span', { class: 'muted' }, STEP_LABEL[k] || k), h('span', { class: 'sr-only' }, ' (not yet)')),
    ),
  );
}

function stepDetail(step) {
  const d = step.details || {};
  const parts = [];
  if (d.tx_hash) parts.push(`tx ${shortHash(d.tx_hash)}`);
  if (d.block_number ?? d.block) parts.push(`block ${d.block_number ?? d.block}`);
  if (d.how) parts.push(`by ${d.how}`);
  if (d.type && step.kind === 'challenge_issued') parts.push(`${d.type} challenge`);
  if (d.reason) parts.push(d.reason);
  if (d.batch_size) parts.push(`batch of ${d.batch_size}`);
  return parts.length ? h('span', { class: 'detail' }, parts.join(' · ')) : null;
}

export function isFinal(transfer) {
  return transfer.status === 'confirmed' || transfer.status === 'failed';
}

const EXPLORERS = { 1001: 'https://kairos.kaiascan.io', 8217: 'https://kaiascan.io' };

/** A transaction hash, linked to the network's explorer where there is one (not on the local chain). */
export function txLink(hash, chainId) {
  if (!hash) return '—';
  const base = EXPLORERS[chainId];
  const text = h('code', { title: hash }, shortHash(hash));
  return base ? h('a', { href: `${base}/tx/${hash}`, rel: 'noopener noreferrer', target: '_blank' }, text) : text;
}

/** The next slot starts still open for orders: after gate closure, aligned to the slot length (UTC). */
export function openSlots({ slotMinutes = 15, gateClosureMinutes = 5, count = 8, now = Date.now() } = {}) {
  const len = slotMinutes * 60000;
  let start = Math.ceil((now + gateClosureMinutes * 60000) / len) * len;
  if (start - gateClosureMinutes * 60000 <= now) start += len;
  return Array.from({ length: count }, (_, i) => new Date(start + i * len));
}
