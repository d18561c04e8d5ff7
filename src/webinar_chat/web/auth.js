// The log-in session of this browser: tokens in localStorage, refresh shared by every tab, and
// `api()`, the one fetch wrapper every JSON call goes through (bearer token, one refresh-and-retry
// on 401, a timeout, and a result that never throws).

const SESSION_KEY = 'webinar-chat:session';
// Refresh the access token when this share of its lifetime has passed, so a socket never sees it
// expire in normal operation (an expired one is still refreshed: see RealtimeConnection).
const REFRESH_AT = 0.8;
// Default timeout of a JSON call; long-polls pass their own.
const API_TIMEOUT_MS = 15000;

export class AuthSession {
  constructor({ storage = globalThis.localStorage, fetchImpl = globalThis.fetch?.bind(globalThis),
    locks = globalThis.navigator?.locks, now = () => Date.now(), logger = null,
    timers = { setTimeout: globalThis.setTimeout?.bind(globalThis),
      clearTimeout: globalThis.clearTimeout?.bind(globalThis) } } = {}) {
    this.storage = storage;
    this.timers = timers;
    this.fetch = fetchImpl;
    this.locks = locks;
    this.now = now;
    this.log = logger;
    this.listeners = new Set();
    this.refreshing = null;
    this.timer = null;
    this.data = this._read();
  }

  _read() {
    try {
      const data = JSON.parse(this.storage.getItem(SESSION_KEY) || 'null');
      if (data && typeof data.access_token === 'string' && typeof data.refresh_token === 'string') {
        return data;
      }
    } catch {
      // a corrupt entry is the same as none
    }
    return null;
  }

  get loggedIn() {
    return this.data !== null;
  }

  get accessToken() {
    return this.data ? this.data.access_token : null;
  }

  get user() {
    return this.data ? this.data.user : null;
  }

  /** Store a `/api/auth/login` or `/api/auth/refresh` answer. */
  save(answer) {
    this.data = {
      access_token: answer.access_token,
      refresh_token: answer.refresh_token,
      expires_at: this.now() + (answer.expires_in || 0) * 1000,
      user: answer.user || (this.data && this.data.user) || null,
    };
    this.storage.setItem(SESSION_KEY, JSON.stringify(this.data));
    this._notify();
  }

  clear() {
    this.data = null;
    this.storage.removeItem(SESSION_KEY);
    this._notify();
  }

  /** `fn(token|null)` on every change of the access token (refresh, log-out, another tab). */
  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  _notify() {
    this.scheduleRefresh();
    for (const fn of [...this.listeners]) fn(this.accessToken);
  }

  /** Another tab wrote the session (the page forwards `storage` events here). */
  reload() {
    const fresh = this._read();
    if ((fresh && fresh.access_token) !== this.accessToken) {
      this.data = fresh;
      this._notify();
    }
  }

  scheduleRefresh() {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    if (!this.data || !this.data.expires_at) return;
    // The server's `exp` is in whole seconds, so a token may end up to 1 s before expires_in
    // says; count from that earliest moment.
    const lifetime = Math.max(0, this.data.expires_at - this.now() - 1000);
    const delay = Math.max(500, lifetime * REFRESH_AT);
    this.timer = this.timers.setTimeout(() => {
      this.timer = null;
      this.refresh(this.accessToken);
    }, delay);
  }

  stop() {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.listeners.clear();
  }

  /**
   * Get a new access token. `staleToken` is the token the caller found wanting: if another tab
   * (or an earlier call) already replaced it, that newer token is used instead of rotating again —
   * re-using a rotated refresh token would revoke the whole session.
   * Resolves to true when a valid session remains, false when the user must log in again.
   */
  refresh(staleToken = this.accessToken) {
    if (this.refreshing) return this.refreshing;
    const run = async () => {
      this.reload();
      if (!this.data) return false;
      if (this.data.access_token !== staleToken) return true;
      let response;
      try {
        response = await this.fetch('/api/auth/refresh', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ refresh_token: this.data.refresh_token }),
        });
      } catch {
        return this.data !== null; // offline: keep the session, try again later
      }
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = null;
      }
      if (response.ok && body && body.access_token) {
        this.save(body);
        this.log?.debug('token_refreshed');
        return true;
      }
      if (response.status === 400 || response.status === 401) {
        this.log?.warn('session_ended', { code: body && body.code });
        this.clear();
        return false;
      }
      return true; // a server fault: the old session may still work after it recovers
    };
    const locked = this.locks && typeof this.locks.request === 'function'
      ? this.locks.request('webinar-chat-token-refresh', run) : run();
    this.refreshing = locked.finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  /**
   * One JSON call. Resolves to {status, body, headers}; status 0 when no answer arrived (network
   * error, timeout, or `signal` aborted). A 401 refreshes the token and retries once.
   */
  async api(method, path, { body, signal, timeoutMs = API_TIMEOUT_MS, auth = true, keepalive } = {}) {
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const token = this.accessToken;
      const result = await fetchJson(this.fetch, method, path, {
        body, signal, timeoutMs, keepalive, token: auth ? token : null, timers: this.timers,
      });
      if (result.status === 401 && auth && attempt === 0 && this.data) {
        if (await this.refresh(token)) continue;
      }
      return result;
    }
    /* istanbul ignore next: the loop always returns */
    return { status: 0, body: null, headers: null };
  }
}

/** fetch + JSON with a timeout; never throws. */
export async function fetchJson(fetchImpl, method, path,
  { body, signal, timeoutMs, token, keepalive, timers = globalThis } = {}) {
  const controller = new AbortController();
  const onAbort = () => controller.abort();
  if (signal) {
    if (signal.aborted) controller.abort();
    else signal.addEventListener('abort', onAbort, { once: true });
  }
  const timer = timeoutMs ? timers.setTimeout(() => controller.abort(), timeoutMs) : null;
  try {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetchImpl(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: 'no-store',
      keepalive: Boolean(keepalive),
    });
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
    return { status: response.status, body: parsed, headers: response.headers };
  } catch (err) {
    return { status: 0, body: null, headers: null, error: err };
  } finally {
    if (timer !== null) timers.clearTimeout(timer);
    if (signal) signal.removeEventListener('abort', onAbort);
  }
}
