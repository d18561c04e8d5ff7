// Test doubles for the browser: a manual clock, a scripted server behind fetch, a WebSocket whose
// other end the test plays, and localStorage. The code under test is the real chat-client.js.

/** Timers that only run when the test advances the clock. */
export class FakeClock {
  constructor() {
    this.t = 1_000_000;
    this.timers = new Map();
    this.nextId = 1;
  }

  now() { return this.t; }

  setTimeout(fn, ms = 0) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn, every: null });
    return id;
  }

  setInterval(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + ms, fn, every: ms });
    return id;
  }

  clearTimeout(id) { this.timers.delete(id); }

  clearInterval(id) { this.timers.delete(id); }

  pending() { return this.timers.size; }

  /** Move time forward, firing due timers in order and letting promises settle in between. */
  async advance(ms) {
    const end = this.t + ms;
    await settle();
    for (;;) {
      let nextId = null;
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (next === null || timer.at < next.at)) { next = timer; nextId = id; }
      }
      if (!next) break;
      this.t = next.at;
      if (next.every) next.at += next.every;
      else this.timers.delete(nextId);
      next.fn();
      await settle();
    }
    this.t = end;
    await settle();
  }

  env(overrides = {}) {
    return {
      setTimeout: this.setTimeout.bind(this),
      clearTimeout: this.clearTimeout.bind(this),
      setInterval: this.setInterval.bind(this),
      clearInterval: this.clearInterval.bind(this),
      now: this.now.bind(this),
      random: () => 0.5,
      isOnline: () => true,
      isVisible: () => true,
      ...overrides,
    };
  }
}

export async function settle() {
  for (let i = 0; i < 20; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

/**
 * fetch answered by `handler(method, path, body)` → {status, body} | 'hang' | 'network'.
 * Every call is recorded; a hanging call ends only when its signal aborts.
 */
export function fakeFetch(handler) {
  const calls = [];
  const fetch = (path, init = {}) => {
    const method = init.method || 'GET';
    const body = init.body ? JSON.parse(init.body) : undefined;
    const call = { method, path, body, headers: init.headers || {}, aborted: false };
    calls.push(call);
    return new Promise((resolve, reject) => {
      const abort = () => {
        call.aborted = true;
        reject(Object.assign(new Error('aborted'), { name: 'AbortError' }));
      };
      if (init.signal) {
        if (init.signal.aborted) return abort();
        init.signal.addEventListener('abort', abort, { once: true });
      }
      Promise.resolve(handler(method, path, body, call)).then((answer) => {
        if (call.aborted || answer === 'hang') return;
        if (answer === 'network') return reject(new TypeError('Failed to fetch'));
        resolve({
          status: answer.status,
          ok: answer.status >= 200 && answer.status < 300,
          headers: new Map(Object.entries(answer.headers || {})), // lower-case names
          json: async () => answer.body,
        });
      });
    });
  };
  return { fetch, calls };
}

export function memoryStorage(initial = {}) {
  const data = new Map(Object.entries(initial));
  return {
    data,
    getItem: (k) => (data.has(k) ? data.get(k) : null),
    setItem: (k, v) => data.set(k, String(v)),
    removeItem: (k) => data.delete(k),
  };
}

/** WebSocket stand-in; `FakeSocket.instances` are the sockets the client opened. */
export function fakeSocketClass() {
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      FakeSocket.instances.push(this);
    }

    send(data) { this.sent.push(JSON.parse(data)); }

    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }

    // --- the server side ---
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    receive(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }

    serverClose(code = 1006) {
      this.readyState = 3;
      this.onclose?.({ code, reason: '' });
    }

    frames(type) { return this.sent.filter((f) => f.type === type); }
  }
  FakeSocket.instances = [];
  return FakeSocket;
}

export const silentLogger = { debug() {}, info() {}, warn() {}, error() {} };

/** A logger that keeps warnings, for asserting on them. */
export function recordingLogger() {
  const lines = [];
  const log = (level) => (event, context) => lines.push({ level, event, context });
  return { lines, debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
}
