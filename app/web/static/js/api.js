// The API client: the same tokens as any other client, kept in sessionStorage (gone when the tab
// closes), refreshed once on a 401 and retried. Route availability comes from the OpenAPI document.

const BASE = '/api/v1';
const STORE = 'essx.tokens';

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && body.detail !== undefined ? body.detail : body;
    super(typeof detail === 'string' ? detail : describe(detail) || `HTTP ${status}`);
    this.status = status;
    this.name = (body && body.error) || `HTTP${status}`;
    this.body = body;
  }
}

function describe(detail) {
  if (Array.isArray(detail)) {
    return detail.map((e) => `${(e.loc || []).filter((p) => p !== 'body').join('.')}: ${e.msg}`).join('; ');
  }
  return detail ? JSON.stringify(detail) : '';
}

export function tokens() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE) || 'null');
  } catch {
    return null;
  }
}

function saveTokens(pair) {
  sessionStorage.setItem(STORE, JSON.stringify({ access: pair.access_token, refresh: pair.refresh_token }));
}

const listeners = new Set();
/** Called with no argument when the session ends (logout, or a refresh token that no longer works). */
export function onSignedOut(fn) {
  listeners.add(fn);
}

export function signOut(reason) {
  sessionStorage.removeItem(STORE);
  for (const fn of listeners) fn(reason);
}

export async function login(email, password) {
  const form = new URLSearchParams({ username: email, password });
  const res = await fetch(`${BASE}/auth/token`, { method: 'POST', body: form });
  const body = await readBody(res);
  if (!res.ok) throw new ApiError(res.status, body);
  saveTokens(body);
}

/** Ends the session on the server (its tokens stop working at once), then in this tab. */
export async function logout(reason) {
  const current = tokens();
  if (current) {
    try {
      await fetch(`${BASE}/auth/logout`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: current.refresh }),
      });
    } catch {
      // offline: the tokens still leave this tab
    }
  }
  signOut(reason);
}

export async function register(data) {
  const res = await fetch(`${BASE}/auth/register`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(data),
  });
  const body = await readBody(res);
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

let refreshing = null;
/** One refresh at a time: refresh tokens rotate, and a reused one revokes the whole family. */
export function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      const current = tokens();
      if (!current) return false;
      const res = await fetch(`${BASE}/auth/refresh`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: current.refresh }),
      });
      if (!res.ok) return false;
      saveTokens(await res.json());
      return true;
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

async function readBody(res) {
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') || '';
  if (type.includes('json')) return res.json();
  return res.text();
}

/** An authenticated fetch; on 401 refreshes once and retries, then signs out. Returns the Response. */
export async function authFetch(path, init = {}) {
  const attempt = () => {
    const current = tokens();
    const headers = new Headers(init.headers || {});
    if (current) headers.set('Authorization', `Bearer ${current.access}`);
    return fetch(path.startsWith('/') ? path : `${BASE}/${path}`, { ...init, headers });
  };
  let res = await attempt();
  if (res.status === 401 && tokens()) {
    if (await refresh()) res = await attempt();
    else {
      signOut('Your session has ended. Please log in again.');
      throw new ApiError(401, { error: 'Unauthorized', detail: 'session ended' });
    }
  }
  return res;
}

/**
 * api('GET', '/wallets/me') -> parsed JSON. Options: body (JSON), query (object), idempotencyKey,
 * headers, signal. Throws ApiError for any non-2xx answer.
 */
export async function api(method, path, { body, query, idempotencyKey, headers = {}, signal } = {}) {
  let url = `${BASE}${path}`;
  if (query) {
    const qs = new URLSearchParams(
      Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== ''),
    ).toString();
    if (qs) url += `?${qs}`;
  }
  const h = { Accept: 'application/json', ...headers };
  if (body !== undefined) h['Content-Type'] = 'application/json';
  if (idempotencyKey) h['Idempotency-Key'] = idempotencyKey;
  const res = await authFetch(url, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  const parsed = await readBody(res);
  if (!res.ok) throw new ApiError(res.status, parsed);
  return parsed;
}

export const get = (path, query, opts = {}) => api('GET', path, { ...opts, query });
export const post = (path, body, opts = {}) => api('POST', path, { ...opts, body });

/** A fresh Idempotency-Key per money-moving request (the same form re-submitted gets a new one). */
export function newIdempotencyKey() {
  return crypto.randomUUID();
}

// -- feature detection ------------------------------------------------------------------------

let routes = null;

/** Loads /openapi.json once; `has('/orders', 'post')` is then true when that route exists. */
export async function loadFeatures(force = false) {
  if (routes && !force) return routes;
  const res = await fetch('/openapi.json', { headers: { Accept: 'application/json' } });
  const doc = res.ok ? await res.json() : { paths: {} };
  routes = new Map();
  for (const [path, ops] of Object.entries(doc.paths || {})) {
    if (!path.startsWith(BASE)) continue;
    routes.set(normalise(path.slice(BASE.length)), new Set(Object.keys(ops).map((m) => m.toLowerCase())));
  }
  return routes;
}

function normalise(path) {
  return path.replace(/\{[^}]+\}/g, '{}');
}

export function has(path, method = 'get') {
  const ops = routes && routes.get(normalise(path));
  return Boolean(ops && ops.has(method.toLowerCase()));
}
