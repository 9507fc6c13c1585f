// Live updates: timers that stop with their view, and the server's event stream (GET /api/v1/stream).
// EventSource cannot send an Authorization header, so the stream is read with fetch and parsed here;
// Last-Event-ID is sent on reconnect so no event is lost.

import { authFetch } from './api.js';

/** Runs fn now and then every `ms` (never overlapping itself); returns stop(). Hidden tabs skip ticks. */
export function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try {
        await fn();
      } catch (err) {
        if (!stopped) console.warn('refresh failed', err);
      }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

export class EventStream {
  constructor(path = '/api/v1/stream') {
    this.path = path;
    this.handlers = new Set();
    this.lastEventId = null;
    this.controller = null;
    this.connected = false;
    this.stopped = true;
  }

  /** fn(event) for every event: {type, id, data (parsed JSON when it is JSON)}. Returns unsubscribe. */
  subscribe(fn) {
    this.handlers.add(fn);
    return () => this.handlers.delete(fn);
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop();
  }

  stop() {
    this.stopped = true;
    this.connected = false;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    let delay = 1000;
    while (!this.stopped) {
      try {
        await this.readOnce();
        delay = 1000;
      } catch (err) {
        if (this.stopped) return;
        if (err && err.name !== 'AbortError') console.warn('event stream interrupted; reconnecting', err.message);
      }
      this.connected = false;
      if (this.stopped) return;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 30000);
    }
  }

  async readOnce() {
    this.controller = new AbortController();
    const headers = { Accept: 'text/event-stream' };
    if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
    const res = await authFetch(this.path, { headers, signal: this.controller.signal });
    if (!res.ok || !res.body) throw new Error(`stream answered ${res.status}`);
    this.connected = true;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const blocks = buffer.split(/\r?\n\r?\n/);
      buffer = blocks.pop();
      for (const block of blocks) this.dispatch(parseBlock(block));
    }
  }

  dispatch(event) {
    if (!event) return;
    if (event.id) this.lastEventId = event.id;
    for (const fn of this.handlers) {
      try {
        fn(event);
      } catch (err) {
        console.warn('event handler failed', err);
      }
    }
  }
}

/** One SSE block -> {type, id, data}; comments and keep-alives -> null. */
export function parseBlock(block) {
  let type = 'message';
  let id = null;
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (name === 'event') type = value;
    else if (name === 'data') data.push(value);
    else if (name === 'id') id = value;
  }
  if (!data.length) return null;
  const text = data.join('\n');
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // plain text event
  }
  if (type === 'message' && parsed && typeof parsed === 'object' && typeof parsed.type === 'string') {
    type = parsed.type;
  }
  return { type, id, data: parsed };
}

/** True when an event's type mentions one of the words (e.g. 'transfer', 'fault'). */
export function isAbout(event, ...words) {
  const type = String(event.type || '').toLowerCase();
  return words.some((w) => type.includes(w));
}
