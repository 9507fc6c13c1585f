// The dashboard shell: sign-in, navigation by role and by the routes the API has, and a hash router
// whose views clean up their timers and charts when left.

import { get, has, loadFeatures, logout, onSignedOut, tokens } from './api.js';
import { h, notice, replace } from './dom.js';
import { EventStream } from './live.js';
import { renderAuth } from './views/auth.js';

const VIEWS = [
  // Prosumers and consumers
  { path: '/wallet', label: 'Wallet', roles: ['prosumer', 'consumer'], load: () => import('./views/wallet.js') },
  { path: '/energy', label: 'Energy', roles: ['prosumer', 'consumer'], load: () => import('./views/sites.js') },
  {
    path: '/market',
    label: 'Market',
    roles: ['prosumer', 'consumer'],
    needs: () => has('/market/book') || has('/orders', 'post'),
    load: () => import('./views/market.js'),
  },
  {
    path: '/trading',
    label: 'Auto-trading',
    roles: ['prosumer', 'consumer'],
    needs: () => has('/trading/profile'),
    load: () => import('./views/trading.js'),
  },
  {
    path: '/trades',
    label: 'Trades',
    roles: ['prosumer', 'consumer'],
    needs: () => has('/trades'),
    load: () => import('./views/trades.js'),
  },
  {
    path: '/statements',
    label: 'Statements',
    roles: ['prosumer', 'consumer'],
    needs: () => has('/statements'),
    load: () => import('./views/statements.js'),
  },
  // Operators
  { path: '/admin/users', label: 'Users', roles: ['admin'], load: () => import('./views/admin-users.js') },
  { path: '/admin/coin', label: 'Coin', roles: ['admin'], load: () => import('./views/admin-coin.js') },
  {
    path: '/admin/sites',
    label: 'Sites',
    roles: ['admin'],
    needs: () => has('/sites'),
    load: () => import('./views/admin-sites.js'),
  },
  {
    path: '/admin/market',
    label: 'Market',
    roles: ['admin'],
    needs: () => has('/admin/market/summary') || has('/market/book'),
    load: () => import('./views/admin-market.js'),
  },
  {
    path: '/admin/ledger',
    label: 'Ledger',
    roles: ['admin'],
    needs: () => has('/ledger/slots/{}'),
    load: () => import('./views/admin-ledger.js'),
  },
  { path: '/admin/audit', label: 'Audit log', roles: ['admin'], load: () => import('./views/admin-audit.js') },
];

const app = {
  user: null,
  coin: null,
  stream: null,
  /** Shows a short message in the live status region (read out by screen readers). */
  announce(text, kind = 'ok') {
    const region = document.getElementById('status');
    if (text) replace(region, notice(kind, text));
    else replace(region);
    clearTimeout(app.announceTimer);
    if (text) app.announceTimer = setTimeout(() => replace(region), 6000);
  },
};

let cleanup = null;
let renderSeq = 0;

function visibleViews() {
  return VIEWS.filter((v) => app.user && v.roles.includes(app.user.role) && (!v.needs || v.needs()));
}

function currentPath() {
  return (location.hash || '#/').slice(1) || '/';
}

function renderNav(active) {
  const nav = document.getElementById('nav');
  replace(
    nav,
    visibleViews().map((v) =>
      h('a', { href: `#${v.path}`, 'aria-current': v.path === active ? 'page' : false }, v.label),
    ),
  );
  nav.hidden = false;
  const account = document.getElementById('account');
  account.hidden = false;
  replace(document.getElementById('who'), `${app.user.display_name} · ${app.user.role}`);
}

async function route(focus = true) {
  const seq = ++renderSeq;
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.warn('view cleanup failed', err);
    }
    cleanup = null;
  }
  const root = document.getElementById('view');
  if (!tokens()) {
    document.getElementById('nav').hidden = true;
    document.getElementById('account').hidden = true;
    renderAuth(root, { onSignedIn: () => boot() });
    return;
  }
  const views = visibleViews();
  let path = currentPath();
  let view = views.find((v) => v.path === path);
  if (!view) {
    view = views[0];
    path = view.path;
    history.replaceState(null, '', `#${path}`);
  }
  renderNav(path);
  replace(root, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const module = await view.load();
    if (seq !== renderSeq) return; // the user moved on while the module loaded
    replace(root);
    document.title = `${view.label} · ESSX`;
    const done = await module.render(root, app);
    if (seq !== renderSeq) {
      if (typeof done === 'function') done();
      return;
    }
    cleanup = typeof done === 'function' ? done : null;
    if (focus) root.focus();
  } catch (err) {
    console.warn('view failed', err);
    replace(root, notice('error', `This page could not be shown: ${err.message}`));
  }
}

async function boot() {
  try {
    await loadFeatures();
  } catch (err) {
    console.warn('no OpenAPI document; showing the basic views only', err);
  }
  if (tokens()) {
    try {
      app.user = await get('/users/me');
    } catch (err) {
      if (err.status !== 401) app.announce(`Could not load your account: ${err.message}`, 'error');
      app.user = null;
    }
  }
  if (app.user && !app.coin) {
    app.coin = await get('/coin').catch(() => ({ symbol: 'ENC', chain_id: null }));
  }
  if (app.user && has('/stream') && !app.stream) {
    app.stream = new EventStream();
    app.stream.start();
  }
  await route(false);
}

onSignedOut((reason) => {
  if (app.stream) app.stream.stop();
  app.stream = null;
  app.user = null;
  if (reason) app.announce(reason, 'warn');
  history.replaceState(null, '', '#/');
  route(false);
});

document.getElementById('logout').addEventListener('click', () => logout('You are logged out.'));
window.addEventListener('hashchange', () => route(true));
boot();

export { app };
