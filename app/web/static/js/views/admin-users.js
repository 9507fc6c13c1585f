// Operator: approve prosumers waiting for approval; see every account.

import { get, post } from '../api.js';
import { badge, field, h, replace, table, timeEl } from '../dom.js';
import { every } from '../live.js';

export async function render(root, app) {
  const pending = h('div', { id: 'pending-users' });
  const all = h('div', { id: 'all-users' });
  const filter = h(
    'select',
    { name: 'status' },
    ['', 'pending', 'approved', 'disabled'].map((s) => h('option', { value: s }, s || 'any status')),
  );
  root.append(
    h('h1', {}, 'Users'),
    h(
      'div',
      { class: 'grid' },
      h('section', { class: 'card wide', 'aria-labelledby': 'pending-title' }, h('h2', { id: 'pending-title' }, 'Waiting for approval'), pending),
      h(
        'section',
        { class: 'card wide stack', 'aria-labelledby': 'all-title' },
        h('div', { class: 'spread' }, h('h2', { id: 'all-title' }, 'All users'), field('Show', filter)),
        all,
      ),
    ),
  );

  const approve = async (user, button) => {
    button.disabled = true;
    try {
      const result = await post(`/admin/users/${user.id}/approve`, {});
      const grant = result.grant_status === 'minted' ? ` and granted ${result.grant} coins` : '';
      app.announce(`${user.display_name} is approved${grant}.`);
    } catch (err) {
      app.announce(`Could not approve ${user.email}: ${err.message}`, 'error');
    }
    refresh();
  };

  const columns = (withAction) => [
    { label: 'Id', num: true, value: (u) => u.id },
    { label: 'Name', value: (u) => u.display_name },
    { label: 'Email', value: (u) => u.email },
    { label: 'Role', value: (u) => u.role },
    { label: 'Status', value: (u) => badge(u.status) },
    { label: 'Registered', value: (u) => timeEl(u.created_at) },
    withAction
      ? {
          label: 'Action',
          value: (u) => h('button', { type: 'button', class: 'small', 'aria-label': `Approve ${u.display_name}`, onclick: (e) => approve(u, e.currentTarget) }, 'Approve'),
        }
      : { label: 'Approved', value: (u) => (u.approved_at ? timeEl(u.approved_at) : '—') },
  ];

  const refresh = async () => {
    const [waiting, users] = await Promise.all([
      get('/admin/users', { status: 'pending' }),
      get('/admin/users', { status: filter.value || undefined }),
    ]);
    replace(pending, table(null, columns(true), waiting, 'Nobody is waiting.'));
    replace(all, table(null, columns(false), users, 'No users.'));
  };
  filter.addEventListener('change', refresh);
  const stop = every(5000, refresh);
  return stop;
}
