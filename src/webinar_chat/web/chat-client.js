// The browser chat client of SPEC §5: one realtime socket per tab, an HTTP long-poll fallback,
// and a send pipeline with optimistic messages, timeouts, idempotent re-sends and an outbox that
// survives reloads. No DOM here: chat-ui.js renders and forwards browser events; every decision
// is a pure function of chat-core.js. Design note: docs/client.md (protocol: docs/realtime.md).

import {
  Timeline, applyChange, applyRoomEvent, classifySendResult, connectionStatus, newClientMsgId,
  parseOutbox, roomNotice,
  pollAllowed, pollRetryDelay, readConfig, reconnectDelay, retryDelay, sequenceEvents,
  serializeOutbox, shouldUseFallback, topicFor,
} from './chat-core.js';
import { BAN_CODES, banFrom, banRecheckDelay } from './chat-core.js';
import { QuestionBoard } from './chat-core.js';
import { serverErrorText, t } from './i18n.js';

export * from './chat-core.js';

export const MAX_MESSAGE_LENGTH = 2000; // the server's default `max_message_length`
const HISTORY_PAGE = 100;
const CATCH_UP_PAGE = 500;
// Client close codes (4000–4999 are the application's): the socket was declared dead.
const CLOSE_SILENT = 4001;
const AUTH_ERRORS = new Set(['token_expired', 'unauthorized', 'invalid_token']);
// In the long-poll fallback the presence count is read from its endpoint this often (a socket
// gets `presence` frames instead; docs/webinar-features.md, "Presence").
export const PRESENCE_REFRESH_MS = 10_000;

/** Timers, clock, randomness and browser state, injectable for tests. */
export function browserEnv(overrides = {}) {
  const g = globalThis;
  return {
    setTimeout: g.setTimeout.bind(g),
    clearTimeout: g.clearTimeout.bind(g),
    setInterval: g.setInterval.bind(g),
    clearInterval: g.clearInterval.bind(g),
    now: () => Date.now(),
    random: Math.random,
    WebSocket: g.WebSocket,
    isOnline: () => (g.navigator ? g.navigator.onLine !== false : true),
    isVisible: () => (g.document ? g.document.visibilityState !== 'hidden' : true),
    ...overrides,
  };
}

// --- the socket -------------------------------------------------------------------------------

/**
 * One WebSocket per tab, shared by every subscriber of every topic. Each topic is joined once,
 * however many listeners it has (a chat mounted twice is one subscription); the last listener to
 * leave sends `leave`, and the socket closes when no topic is left.
 *
 * A listener: {lastSeq(): number|null, onJoined(frame), onEvents(events), onError(frame),
 *              onStatus(snapshot), onAuthLost()}.
 */
export class RealtimeConnection {
  constructor({ url, auth, config = readConfig(null), env = browserEnv(), logger, monitor = null }) {
    this.url = url;
    this.auth = auth; // {accessToken, refresh(staleToken) → Promise<bool>}
    this.config = config;
    this.env = env;
    this.log = logger;
    this.monitor = monitor;
    this.topics = new Map(); // topic → {listeners: Set, joined: bool, denied: bool}
    this.ws = null;
    this.stopped = true;
    this.failures = 0; // consecutive connections that closed before becoming live
    this.attempt = 0; // reconnect attempts since the last success (drives the backoff)
    this.live = false;
    this.authBlocked = false;
    this.lastFrameAt = env.now(); // last frame of a live socket (fallback decision)
    this.socketFrameAt = env.now(); // last frame of the current socket (watchdog)
    this.reconnectTimer = null;
    this.heartbeatTimer = null;
    this.watchdogTimer = null;
    this.refSeq = 0;
  }

  /** Listen to a topic; returns the function that stops listening. */
  subscribe(topic, listener) {
    let entry = this.topics.get(topic);
    if (!entry) {
      entry = { listeners: new Set(), joined: false, denied: false };
      this.topics.set(topic, entry);
    }
    entry.listeners.add(listener);
    if (entry.listeners.size === 1) {
      if (this.stopped) this._start();
      else if (this._isOpen()) this._join(topic);
    } else {
      listener.onStatus?.(this.snapshot());
    }
    return () => this._unsubscribe(topic, listener);
  }

  /** Join a denied topic again (its ban is over): now if the socket is open, else on connect. */
  rejoin(topic) {
    const entry = this.topics.get(topic);
    if (!entry) return;
    entry.denied = false;
    if (this._isOpen()) this._join(topic);
  }

  _unsubscribe(topic, listener) {
    const entry = this.topics.get(topic);
    if (!entry || !entry.listeners.delete(listener)) return;
    if (entry.listeners.size > 0) return;
    this.topics.delete(topic);
    if (this._isOpen()) this._send({ type: 'leave', topic });
    if (this.topics.size === 0) this.stop();
  }

  /** What the fallback decision needs: {live, failures, silentMs, attempt}. */
  snapshot() {
    return {
      live: this.live,
      failures: this.failures,
      silentMs: this.env.now() - this.lastFrameAt,
      attempt: this.attempt,
    };
  }

  _start() {
    this.stopped = false;
    this.lastFrameAt = this.env.now();
    const tick = Math.max(100, Math.min(1000, Math.floor(this.config.silenceMs / 4)));
    this.watchdogTimer = this.env.setInterval(() => this._watchdog(), tick);
    this.heartbeatTimer = this.env.setInterval(() => {
      if (this._isOpen()) this._send({ type: 'heartbeat' });
    }, this.config.heartbeatMs);
    this._connect();
  }

  /** Close everything: timers, socket, listeners. Safe to call twice. */
  stop() {
    this.stopped = true;
    for (const name of ['reconnectTimer']) {
      if (this[name] !== null) this.env.clearTimeout(this[name]);
      this[name] = null;
    }
    for (const name of ['heartbeatTimer', 'watchdogTimer']) {
      if (this[name] !== null) this.env.clearInterval(this[name]);
      this[name] = null;
    }
    this.topics.clear();
    this._drop(1000, 'client closing');
    this.live = false;
  }

  /** The browser came back online: try now instead of waiting out the backoff. */
  online() {
    if (this.stopped || this.ws) return;
    if (this.reconnectTimer !== null) this.env.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this._connect();
  }

  /** A new access token (refresh, log-in, another tab): takes effect on the open socket. */
  tokenChanged(token) {
    if (!this._isOpen()) return;
    this._send({ type: 'auth', token: token ?? null });
    if (token && this.authBlocked) {
      this.authBlocked = false;
      for (const topic of this.topics.keys()) this._join(topic);
    }
  }

  _isOpen() {
    return Boolean(this.ws && this.ws.readyState === 1);
  }

  _connect() {
    if (this.stopped || this.ws) return;
    if (!this.env.isOnline()) {
      this._emitStatus(); // wait for online()
      return;
    }
    let ws;
    try {
      ws = new this.env.WebSocket(this.url);
    } catch (err) {
      this.log.warn('socket_create_failed', { error: String(err) });
      this._closed(null, { code: 1006, reason: 'cannot create socket' });
      return;
    }
    this.ws = ws;
    this.socketFrameAt = this.env.now(); // this socket's silence is counted from its start
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.log.debug('socket_open');
      // The token goes first on every (re)connect: the joins below depend on it.
      this._send({ type: 'auth', token: this.auth.accessToken });
      for (const topic of this.topics.keys()) this._join(topic);
    };
    ws.onmessage = (event) => {
      if (this.ws === ws) this._frame(event.data);
    };
    ws.onclose = (event) => this._closed(ws, event);
    ws.onerror = () => {}; // a close event always follows
  }

  _join(topic) {
    const entry = this.topics.get(topic);
    if (!entry || entry.denied) return;
    entry.joined = false;
    let lastSeq = null;
    for (const listener of entry.listeners) {
      const seq = listener.lastSeq ? listener.lastSeq() : null;
      if (seq !== null && seq !== undefined && (lastSeq === null || seq < lastSeq)) lastSeq = seq;
    }
    const frame = { type: 'join', topic, ref: String(++this.refSeq) };
    if (lastSeq !== null) frame.last_seq = lastSeq;
    this._send(frame);
  }

  _send(frame) {
    try {
      this.ws.send(JSON.stringify(frame));
    } catch (err) {
      this.log.debug('socket_send_failed', { error: String(err) });
    }
  }

  _frame(data) {
    this.socketFrameAt = this.env.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.log.warn('socket_bad_frame');
      return;
    }
    // Only a socket that delivers counts as alive for the fallback decision: heartbeats on a
    // socket whose join never succeeds (or whose token expired) are silence to the reader.
    if (this.live || frame.type === 'joined') this.lastFrameAt = this.socketFrameAt;
    const entry = frame.topic ? this.topics.get(frame.topic) : null;
    switch (frame.type) {
      case 'changes':
        if (entry && Array.isArray(frame.events)) {
          for (const l of [...entry.listeners]) l.onEvents(frame.events, 'socket');
        }
        break;
      case 'joined':
        if (!entry) break;
        entry.joined = true;
        this.failures = 0;
        this.attempt = 0;
        this._setLive(true);
        for (const l of [...entry.listeners]) l.onJoined?.(frame);
        break;
      case 'error':
        this._error(frame, entry);
        break;
      case 'presence':
        if (entry && Number.isInteger(frame.count) && frame.count >= 0) {
          for (const l of [...entry.listeners]) l.onPresence?.(frame.count);
        }
        break;
      case 'hello':
      case 'heartbeat':
      case 'auth_ok':
      case 'left':
        break;
      default:
        this.log.debug('socket_unknown_frame', { type: frame.type });
    }
  }

  _error(frame, entry) {
    if (AUTH_ERRORS.has(frame.code)) {
      // Delivery is suspended until a valid token arrives: refresh it, never give up here.
      this.authBlocked = true;
      for (const e of this.topics.values()) e.joined = false;
      this._setLive(false);
      const stale = this.auth.accessToken;
      this.auth.refresh(stale).then((ok) => {
        if (this.stopped) return;
        // A new token reaches the socket through tokenChanged() (AuthSession.onChange). If the
        // refresh could not run (offline, server fault) the silence watchdog recycles the socket
        // and the next connect sends the token again — never a tight loop of auth errors.
        if (!ok) {
          for (const e of this.topics.values()) for (const l of [...e.listeners]) l.onAuthLost?.();
        }
      });
      return;
    }
    if (entry && (frame.code === 'forbidden' || frame.code === 'not_found'
      || BAN_CODES.has(frame.code))) {
      entry.denied = true;
      entry.joined = false;
      this._setLive(false);
      for (const l of [...entry.listeners]) l.onError?.(frame);
      return;
    }
    this.log.warn('socket_error_frame', { code: frame.code, message: frame.message });
  }

  _watchdog() {
    const silentMs = this.env.now() - this.socketFrameAt;
    if (this.ws && silentMs > this.config.silenceMs) {
      // A socket without any frame for this long is dead even if the browser thinks it is open
      // (a proxy that swallows frames, a half-open TCP connection).
      this.log.warn('socket_silent', { silentMs });
      const ws = this.ws;
      this._drop(CLOSE_SILENT, 'no frames');
      this._closed(ws, { code: CLOSE_SILENT, reason: 'silent' }, true);
      return;
    }
    this._emitStatus();
  }

  /** Detach and close the current socket without waiting for its close event. */
  _drop(code, reason) {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      // already closed
    }
  }

  _closed(ws, event, dropped = false) {
    if (ws !== null && this.ws !== ws && !dropped) return; // a socket we already let go of
    if (this.ws === ws) this.ws = null;
    for (const e of this.topics.values()) e.joined = false;
    this._setLive(false);
    if (this.stopped) return;
    this.failures += 1;
    this.attempt += 1;
    const delay = reconnectDelay(this.attempt, this.config, this.env.random);
    this.log.info('socket_closed', { code: event && event.code, failures: this.failures, delay });
    this.monitor?.track('reconnect_attempt', { reconnectTries: this.attempt, delayMs: delay,
      closeCode: event && event.code });
    this.reconnectTimer = this.env.setTimeout(() => {
      this.reconnectTimer = null;
      this._connect();
    }, delay);
    this._emitStatus();
  }

  _setLive(live) {
    if (this.live === live) return;
    this.live = live;
    this._emitStatus();
  }

  _emitStatus() {
    const snap = this.snapshot();
    for (const e of this.topics.values()) for (const l of [...e.listeners]) l.onStatus?.(snap);
  }
}

// --- one webinar's chat -----------------------------------------------------------------------

/**
 * The state of one webinar's chat in this tab: the timeline, the outbox, the change stream
 * (socket or long-poll fallback). `subscribe(fn)` gets `{type, ...}` notifications:
 * timeline | status | webinar | rejected {content, error} | notice {level, text} | auth_lost |
 * fatal {error}.
 */
export class ChatClient {
  constructor({ webinarId, auth, connection, storage = globalThis.localStorage,
    config = readConfig(null), env = browserEnv(), logger, monitor }) {
    this.webinarId = webinarId;
    this.auth = auth;
    this.connection = connection;
    this.storage = storage;
    this.config = config;
    this.env = env;
    this.log = logger;
    this.monitor = monitor;
    this.topic = topicFor(webinarId);
    this.user = null;
    this.webinar = null;
    this.role = null;
    this.timeline = new Timeline();
    this.lastSeq = null;
    this.held = [];
    this.catchingUp = false;
    this.catchUpTimer = null;
    this.outbox = new Map();
    this.cooldownUntil = 0;
    this.lastSentText = null;
    this.fallback = false;
    this.pollLive = false; // the backup connection's last request was answered
    this.polling = false;
    this.pollAbort = null;
    this.wake = null;
    this.socket = { live: false, failures: 0, silentMs: 0, attempt: 0 };
    this.connectedBefore = false; // a socket was joined once: from then on a loss "reconnects"
    this.status = 'connecting';
    this.hasMoreHistory = false;
    this.listeners = new Set();
    this.started = false;
    this.stopped = false;
    this.unsubscribe = null;
    this.fatal = null;
    this.authLost = false;
    this.ban = null; // {code: 'banned'|'timed_out', until: ms|null, message} while refused
    this.banTimer = null;
    this.banChecking = false;
    this.bans = new Map(); // staff: userId → until (ms|null) of the webinar's current bans
    this.questions = new QuestionBoard(); // the Q&A, kept from QUESTION events and the list
    this.presence = null; // users connected to the webinar now (a number only), null: not known
    this.presenceTimer = null;
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  _emit(type, detail = {}) {
    for (const fn of [...this.listeners]) fn({ type, ...detail });
  }

  get staff() {
    return this.role === 'moderator' || this.role === 'host';
  }

  /** Load the webinar, the latest messages and the outbox, then follow the change stream. */
  async start() {
    if (this.started) return;
    this.started = true;
    const [webinar, me] = await Promise.all([
      this.auth.api('GET', `/api/webinars/${this.webinarId}`),
      this.auth.api('GET', '/api/me'),
    ]);
    if (this.stopped) return;
    if (webinar.status === 401 || me.status === 401) return this._authLost();
    if (banFrom(webinar.body)) return this._banned(banFrom(webinar.body));
    if (webinar.status !== 200 || !webinar.body?.webinar) {
      return this._fatal(serverErrorText(webinar.body, webinar.status,
        webinar.status === 0 ? t('error.cannotReach') : null), webinar.status);
    }
    this.webinar = webinar.body.webinar;
    // The feed position the room state was read at: ROOM events above it replace it.
    this.roomSeq = this.webinar.last_seq;
    this.role = this.webinar.role;
    this.user = me.body?.user || this.auth.user;
    this.timeline = new Timeline({ staff: this.staff, userId: this.user ? this.user.id : null });
    this.monitor?.setContext({ webinarId: this.webinarId, userId: this.user ? this.user.id : null });
    this._emit('webinar');
    if (this.staff) this.loadBans();
    const history = await this._loadHistory();
    if (this.stopped) return;
    if (!history) return;
    this.loadQuestions(); // not awaited: the board takes the list and the events in any order
    this._restoreOutbox();
    this._emit('timeline');
    this.unsubscribe = this.connection.subscribe(this.topic, {
      lastSeq: () => this.lastSeq,
      onEvents: (events, source) => this._ingest(events, source),
      onJoined: () => this._evaluate(),
      onStatus: (snap) => {
        this.socket = snap;
        this._evaluate();
      },
      onError: (frame) => (banFrom(frame) ? this._banned(banFrom(frame))
        : this._fatal(serverErrorText(frame, 403, t('error.cannotFollow')), 403)),
      onAuthLost: () => this._authLost(),
      onPresence: (count) => this._setPresence(count),
    });
    this._evaluate();
    this.flush();
    this._schedulePresence();
  }

  async _loadHistory() {
    for (;;) {
      const r = await this.auth.api('GET',
        `/api/webinars/${this.webinarId}/messages?limit=${HISTORY_PAGE}`);
      if (this.stopped) return false;
      if (r.status === 200 && r.body?.success) {
        for (const m of r.body.messages) this.timeline.upsert(m);
        // Follow the feed from the older of the two reads: a ROOM change committed between the
        // webinar's read and this one is replayed (messages replayed again change nothing).
        this.lastSeq = Math.min(r.body.last_seq, this.roomSeq ?? r.body.last_seq);
        this.hasMoreHistory = Boolean(r.body.has_more);
        return true;
      }
      if (r.status === 401) return this._authLost();
      if (banFrom(r.body)) return this._banned(banFrom(r.body));
      if (r.status !== 0 && r.status < 500) {
        return this._fatal(serverErrorText(r.body, r.status), r.status);
      }
      this.log.warn('history_load_failed', { status: r.status });
      await this._sleep(pollRetryDelay(this.config, this.env.random));
    }
  }

  /** Load the page of messages before the oldest one shown. → number of messages added. */
  async loadEarlier() {
    const oldest = this.timeline.oldestId();
    if (oldest === null || !this.hasMoreHistory) return 0;
    const r = await this.auth.api('GET',
      `/api/webinars/${this.webinarId}/messages?before=${oldest}&limit=${HISTORY_PAGE}`);
    if (r.status !== 200 || !r.body?.success) {
      this._emit('notice', { level: 'error', text: t('error.loadEarlier') });
      return 0;
    }
    let added = 0;
    for (const m of r.body.messages) {
      if (!this.timeline.has(m.id) && this.timeline.upsert(m).changed) added += 1;
    }
    this.hasMoreHistory = Boolean(r.body.has_more);
    this._emit('timeline', { prepended: added });
    return added;
  }

  /** Stop following the chat; pending messages stay in the outbox for the next visit. */
  stop() {
    this.stopped = true;
    if (this.unsubscribe) this.unsubscribe();
    this.unsubscribe = null;
    this.fallback = false;
    if (this.pollAbort) this.pollAbort.abort();
    if (this.wake) this.wake();
    if (this.catchUpTimer !== null) this.env.clearTimeout(this.catchUpTimer);
    if (this.banTimer !== null) this.env.clearTimeout(this.banTimer);
    if (this.presenceTimer !== null) this.env.clearTimeout(this.presenceTimer);
    for (const entry of this.outbox.values()) this._clearEntryTimers(entry);
    this.listeners.clear();
  }

  _fatal(error, status) {
    this.fatal = { error, status };
    this.log.error('chat_unavailable', { error, status });
    this._emit('fatal', { error, status });
    return false;
  }

  _authLost() {
    if (!this.authLost) {
      this.authLost = true;
      this._emit('auth_lost');
    }
    return false;
  }

  // --- presence ---------------------------------------------------------------------------------

  _setPresence(count) {
    if (this.stopped || count === this.presence) return;
    this.presence = count;
    this._emit('presence', { count });
  }

  /** In the fallback, read the count every PRESENCE_REFRESH_MS (the socket pushes it). */
  _schedulePresence() {
    if (this.stopped) return;
    this.presenceTimer = this.env.setTimeout(async () => {
      this.presenceTimer = null;
      if (this.fallback && !this.ban && this.env.isVisible()) await this.refreshPresence();
      this._schedulePresence();
    }, PRESENCE_REFRESH_MS);
  }

  /** GET /api/webinars/{id}/presence; the count, or null when it could not be read. */
  async refreshPresence() {
    const r = await this.auth.api('GET', `/api/webinars/${this.webinarId}/presence`);
    if (r.status === 200 && Number.isInteger(r.body?.count)) {
      this._setPresence(r.body.count);
      return r.body.count;
    }
    return null;
  }

  // --- receiving --------------------------------------------------------------------------------

  _ingest(events, source) {
    if (this.lastSeq === null || this.stopped) return;
    const { ready, held, gap } = sequenceEvents(this.lastSeq, this.held.concat(events));
    let changed = false;
    let questionsChanged = false;
    for (const event of ready) {
      if (event && event.type === 'ROOM') {
        this._applyRoom(event, source);
        this.lastSeq = event.seq;
        continue;
      }
      if (event && event.type === 'QUESTION') {
        questionsChanged = this.questions.applyEvent(event) || questionsChanged;
        this.lastSeq = event.seq;
        continue;
      }
      const result = applyChange(this.timeline, event);
      if (result.warning) this.log.warn('change_ignored', { seq: event.seq, reason: result.warning });
      if (result.resolved) this._resolvedElsewhere(result.resolved, source);
      changed = changed || result.applied;
      this.lastSeq = event.seq;
    }
    this.held = held;
    if (gap) {
      this.log.info('seq_gap', { lastSeq: this.lastSeq, next: held[0].seq, source });
      this._catchUp();
    }
    if (changed) this._emit('timeline', { live: true });
    if (questionsChanged) this._emit('questions', { live: true });
  }

  _applyRoom(event, source) {
    const result = applyRoomEvent(this.webinar, this.roomSeq, event);
    this.webinar = result.webinar;
    this.roomSeq = result.roomSeq;
    if (!result.changed.length) return;
    this.log.info('room_changed', { seq: event.seq, changed: result.changed, source });
    this._emit('webinar', { changed: result.changed });
    const text = roomNotice(this.webinar, result.changed, { staff: this.staff });
    if (text) this._emit('notice', { level: 'info', text });
  }

  /** Read the feed from lastSeq until the gap before `held` is closed. */
  async _catchUp() {
    if (this.catchingUp || this.stopped) return;
    this.catchingUp = true;
    try {
      let more = true;
      while (more && this.held.length > 0 && !this.stopped) {
        const r = await this.auth.api('GET', `/api/webinars/${this.webinarId}/changes`
          + `?after_seq=${this.lastSeq}&limit=${CATCH_UP_PAGE}`);
        if (r.status !== 200 || !r.body?.success) break;
        this._ingest(r.body.changes, 'catch-up');
        more = Boolean(r.body.has_more);
      }
    } finally {
      this.catchingUp = false;
    }
    if (this.held.length > 0 && !this.stopped && this.catchUpTimer === null) {
      this.catchUpTimer = this.env.setTimeout(() => {
        this.catchUpTimer = null;
        this._ingest([], 'catch-up');
      }, pollRetryDelay(this.config, this.env.random));
    }
  }

  // --- connection state and the long-poll fallback --------------------------------------------

  _evaluate() {
    if (this.stopped || this.ban) return; // banned: nothing to follow until _unbanned()
    const snap = this.socket;
    const want = shouldUseFallback({ socketLive: snap.live, failures: snap.failures,
      silentMs: snap.silentMs }, this.config);
    if (want && !this.fallback) {
      this.fallback = true;
      this.pollLive = false; // "live (backup connection)" once a poll is answered
      const reason = snap.failures >= this.config.fallbackAfterFailures ? 'socket_failures'
        : 'silence';
      this.log.warn('fallback_on', { reason, failures: snap.failures });
      this.monitor?.track('fallback_activated', { reason, reconnectTries: snap.attempt,
        failures: snap.failures, silentMs: snap.silentMs });
      this._pollLoop();
    } else if (snap.live && this.fallback) {
      // The socket is joined again; its join carried lastSeq, so the server replays what the
      // long-poll had not delivered yet.
      this.fallback = false;
      this.log.info('fallback_off');
      if (this.pollAbort) this.pollAbort.abort();
    }
    this._updateStatus();
  }

  _updateStatus() {
    if (this.socket.live) this.connectedBefore = true;
    const status = connectionStatus({ online: this.env.isOnline(), socketLive: this.socket.live,
      fallback: this.fallback, pollLive: this.pollLive, connectedBefore: this.connectedBefore });
    if (status !== this.status) {
      this.status = status;
      this._emit('status', { status });
    }
  }

  async _pollLoop() {
    if (this.polling) return;
    this.polling = true;
    try {
      while (this.fallback && !this.stopped && this.lastSeq !== null) {
        if (!pollAllowed({ fallback: this.fallback, visible: this.env.isVisible(),
          online: this.env.isOnline() })) {
          return; // resume() starts the loop again
        }
        const controller = new AbortController();
        this.pollAbort = controller;
        const startedAt = this.env.now();
        // Until the backup connection is known to answer, ask without waiting: the status then
        // says at once whether the chat is live this way, or still reconnecting.
        const probe = !this.pollLive;
        const wait = probe ? 0 : this.config.pollWaitS;
        const r = await this.auth.api('GET', `/api/webinars/${this.webinarId}/changes`
          + `?after_seq=${this.lastSeq}&wait=${wait}`,
        { signal: controller.signal, timeoutMs: (wait + 10) * 1000 });
        this.pollAbort = null;
        if (!this.fallback || this.stopped) return;
        if (r.status === 200 && r.body?.success) {
          this._setPollLive(true);
          this._ingest(r.body.changes, 'poll');
          const early = this.env.now() - startedAt < Math.min(1000, this.config.pollWaitS * 500);
          if (r.body.changes.length === 0 && early && !probe) {
            // An empty answer that did not wait (a proxy cutting long requests, a server without
            // long-poll): treat it as a failed poll rather than spin.
            await this._sleep(pollRetryDelay(this.config, this.env.random));
          }
          continue; // a long-poll answered: ask again at once
        }
        if (r.status === 401) return void this._authLost();
        if (banFrom(r.body)) return void this._banned(banFrom(r.body));
        if (r.status === 403 || r.status === 404) {
          return void this._fatal(serverErrorText(r.body, r.status, t('error.cannotFollow')), r.status);
        }
        this.log.info('poll_failed', { status: r.status });
        this._setPollLive(false);
        await this._sleep(pollRetryDelay(this.config, this.env.random));
      }
    } finally {
      this.polling = false;
      this.pollAbort = null;
    }
  }

  _setPollLive(live) {
    if (this.pollLive !== live) {
      this.pollLive = live;
      this._updateStatus();
    }
  }

  /** Sleep that resume() can cut short. */
  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = this.env.setTimeout(done, ms);
      const self = this;
      function done() {
        self.env.clearTimeout(timer);
        if (self.wake === done) self.wake = null;
        resolve();
      }
      this.wake = done;
    });
  }

  /** The tab became visible or the browser came back online: poll and send at once. */
  resume() {
    if (this.stopped) return;
    if (this.ban) this._checkBan(); // back in the tab: maybe unbanned meanwhile
    this._updateStatus();
    if (this.wake) this.wake();
    if (this.fallback && !this.polling) this._pollLoop();
    if (this.env.isOnline()) this.flush();
  }

  /** The browser went offline. */
  offline() {
    this._updateStatus();
  }

  // --- sending ----------------------------------------------------------------------------------

  _outboxKey() {
    const userId = this.user ? this.user.id : 'anon';
    return `webinar-chat:outbox:v1:${userId}:${this.webinarId}`;
  }

  _persistOutbox() {
    try {
      const entries = [...this.outbox.values()];
      if (entries.length === 0) this.storage.removeItem(this._outboxKey());
      else this.storage.setItem(this._outboxKey(), serializeOutbox(entries));
    } catch (err) {
      this.log.warn('outbox_not_saved', { error: String(err) });
    }
  }

  _restoreOutbox() {
    let restored = [];
    try {
      restored = parseOutbox(this.storage.getItem(this._outboxKey()));
    } catch {
      restored = [];
    }
    for (const saved of restored) {
      const stored = [...this.timeline.server.values()]
        .find((m) => m.client_msg_id === saved.client_msg_id && m.user_id === this.user?.id);
      if (stored) continue; // stored before the reload; the answer was lost
      const entry = { ...saved, fresh: false, inFlight: false, done: false, retryTimer: null,
        timeoutTimer: null };
      this.outbox.set(entry.client_msg_id, entry);
      this.timeline.addOptimistic({ client_msg_id: entry.client_msg_id, content: entry.content,
        state: entry.state, error: entry.error, created_at: entry.created_at });
    }
    this._persistOutbox();
    if (restored.length) this.log.info('outbox_restored', { count: this.outbox.size });
  }

  /**
   * Send a message. Returns {ok: true, clientMsgId} when it was queued, or {ok: false, reason,
   * error?} when nothing was sent (empty, too long, cooldown, chat unavailable).
   */
  send(content) {
    const text = typeof content === 'string' ? content.trim() : '';
    if (!text) return { ok: false, reason: 'empty' };
    if (text.length > MAX_MESSAGE_LENGTH) {
      return { ok: false, reason: 'too_long',
        error: t('error.tooLong', { n: MAX_MESSAGE_LENGTH }) };
    }
    if (!this.user || this.fatal) return { ok: false, reason: 'unavailable' };
    const now = this.env.now();
    // The same text again within the cooldown is a bounce (double click, key chatter, a script
    // calling twice), not a second message.
    if (now < this.cooldownUntil && text === this.lastSentText) {
      return { ok: false, reason: 'cooldown' };
    }
    this.cooldownUntil = now + this.config.sendCooldownMs;
    this.lastSentText = text;
    const entry = {
      client_msg_id: newClientMsgId(), content: text, created_at: new Date(now).toISOString(),
      attempts: 0, state: 'sending', error: null, fresh: true, inFlight: false, done: false,
      retryTimer: null, timeoutTimer: null, startedAt: now,
    };
    this.outbox.set(entry.client_msg_id, entry);
    this._persistOutbox();
    this.timeline.addOptimistic({ client_msg_id: entry.client_msg_id, content: text,
      state: 'sending', created_at: entry.created_at });
    this._emit('timeline', { sent: true });
    this._attempt(entry);
    return { ok: true, clientMsgId: entry.client_msg_id };
  }

  /** Try every pending message now (back online, back visible, socket healthy). */
  flush() {
    for (const entry of this.outbox.values()) {
      if (entry.state === 'failed' || entry.inFlight || entry.done) continue;
      if (entry.notBefore && entry.notBefore > this.env.now()) continue; // a Retry-After
      this._attempt(entry);
    }
  }

  /** The user asked to try a failed message again. */
  retry(clientMsgId) {
    const entry = this.outbox.get(clientMsgId);
    if (!entry || entry.inFlight) return;
    entry.attempts = 0;
    entry.limited = 0;
    entry.fresh = false;
    this._setEntryState(entry, 'sending', null);
    this._attempt(entry);
  }

  /** The user gave up on an unsent message. */
  discard(clientMsgId) {
    const entry = this.outbox.get(clientMsgId);
    if (!entry) return;
    entry.done = true;
    this._clearEntryTimers(entry);
    this.outbox.delete(clientMsgId);
    this._persistOutbox();
    this.timeline.removeOptimistic(clientMsgId);
    this._emit('timeline');
  }

  _setEntryState(entry, state, error = entry.error) {
    entry.state = state;
    entry.error = error;
    if (this.timeline.setLocalState(entry.client_msg_id, state, error)) this._emit('timeline');
  }

  _clearEntryTimers(entry) {
    if (entry.retryTimer !== null) this.env.clearTimeout(entry.retryTimer);
    if (entry.timeoutTimer !== null) this.env.clearTimeout(entry.timeoutTimer);
    entry.retryTimer = null;
    entry.timeoutTimer = null;
  }

  async _attempt(entry) {
    if (entry.inFlight || entry.done || this.stopped) return;
    if (entry.retryTimer !== null) this.env.clearTimeout(entry.retryTimer);
    entry.retryTimer = null;
    if (!this.env.isOnline()) {
      // Queued: the `online` event flushes it. No attempt is spent while offline.
      if (entry.state === 'sending') this._setEntryState(entry, 'pending', null);
      return;
    }
    entry.inFlight = true;
    entry.attempts += 1;
    this._persistOutbox();
    const started = this.env.now();
    const controller = new AbortController();
    let timedOut = false;
    // The sending indicator is tied to this timer: it stops at the timeout whatever the request
    // does afterwards.
    entry.timeoutTimer = this.env.setTimeout(() => {
      entry.timeoutTimer = null;
      timedOut = true;
      controller.abort();
      this.monitor?.track('send_timeout', { clientMsgId: entry.client_msg_id,
        attempts: entry.attempts, timeoutMs: this.config.sendTimeoutMs });
      if (!entry.done) this._setEntryState(entry, 'pending', null);
    }, this.config.sendTimeoutMs);
    const r = await this.auth.api('POST', '/api/messages/create', {
      body: { webinarId: this.webinarId, content: entry.content, clientMsgId: entry.client_msg_id },
      signal: controller.signal, timeoutMs: 0,
    });
    if (entry.timeoutTimer !== null) this.env.clearTimeout(entry.timeoutTimer);
    entry.timeoutTimer = null;
    entry.inFlight = false;
    if (entry.done || this.stopped) return; // resolved meanwhile by a realtime or poll INSERT
    const result = classifySendResult(r.status, r.body, r.headers?.get?.('retry-after') ?? null);
    if (result.kind === 'stored') {
      this._resolve(entry, result.message, result.duplicate ? 'http-409' : 'http', started);
      return;
    }
    const errorMessage = timedOut ? 'timeout' : result.error;
    if (banFrom(r.body)) this._banned(banFrom(r.body)); // and the text goes back to the input
    this.monitor?.track('send_error', { clientMsgId: entry.client_msg_id, status: r.status,
      attempts: entry.attempts, errorMessage });
    if (result.kind === 'retry' && result.retryAfterS) {
      this._retryAfter(entry, result.retryAfterS);
    } else if (result.kind === 'retry') {
      this._scheduleRetry(entry);
    } else if (result.kind === 'auth') {
      this._setEntryState(entry, 'pending', t('error.waitingForLogin'));
      this._authLost();
    } else if (entry.fresh && entry.attempts === 1) {
      // Rejected at once (slow mode, closed chat, too long …): give the text back to the user.
      entry.done = true;
      this.outbox.delete(entry.client_msg_id);
      this._persistOutbox();
      this.timeline.removeOptimistic(entry.client_msg_id);
      this._emit('timeline');
      this._emit('rejected', { content: entry.content, error: result.error, code: result.code,
        retryAfterS: result.retryAfterS });
    } else {
      this._setEntryState(entry, 'failed', result.error);
      this._persistOutbox();
    }
  }

  /**
   * The server is up and said when (429 rate_limited): re-send the same client_msg_id then. Not
   * an attempt against maxSendAttempts, which is about a server that cannot be reached.
   */
  _retryAfter(entry, seconds) {
    entry.limited = (entry.limited || 0) + 1;
    entry.notBefore = this.env.now() + seconds * 1000;
    this._setEntryState(entry, 'pending', t('error.tooFast', { n: seconds }));
    this._persistOutbox();
    entry.retryTimer = this.env.setTimeout(() => {
      entry.retryTimer = null;
      entry.notBefore = 0;
      this._attempt(entry);
    }, seconds * 1000);
  }

  _scheduleRetry(entry) {
    if (entry.attempts - (entry.limited || 0) >= this.config.maxSendAttempts) {
      this._setEntryState(entry, 'failed', t('error.unreachable'));
      this._persistOutbox();
      return;
    }
    this._setEntryState(entry, 'pending', null);
    const delay = retryDelay(entry.attempts, this.config, this.env.random);
    entry.retryTimer = this.env.setTimeout(() => {
      entry.retryTimer = null;
      this._attempt(entry);
    }, delay);
  }

  _resolve(entry, message, via, started) {
    entry.done = true;
    this._clearEntryTimers(entry);
    this.outbox.delete(entry.client_msg_id);
    this._persistOutbox();
    this.timeline.upsert(message);
    this.timeline.removeOptimistic(entry.client_msg_id);
    this.monitor?.track('send_success', { clientMsgId: entry.client_msg_id, via,
      attempts: entry.attempts, latencyMs: started ? this.env.now() - started : null });
    this._emit('timeline', { resolved: entry.client_msg_id });
  }

  /** A change event carried the client_msg_id of a message still in the outbox. */
  _resolvedElsewhere(clientMsgId, source) {
    const entry = this.outbox.get(clientMsgId);
    if (!entry || entry.done) return;
    entry.done = true;
    this._clearEntryTimers(entry);
    this.outbox.delete(clientMsgId);
    this._persistOutbox();
    this.monitor?.track('send_success', { clientMsgId, via: source, attempts: entry.attempts,
      latencyMs: entry.startedAt ? this.env.now() - entry.startedAt : null });
  }

  // --- moderation -------------------------------------------------------------------------------

  /** Hide or unhide a message (moderator/host). → {ok, error?} */
  async setHidden(messageId, hidden) {
    const r = await this.auth.api('POST', `/api/messages/${messageId}/hide`, { body: { hidden } });
    if (r.status === 200 && r.body?.message) {
      if (this.timeline.upsert(r.body.message).changed) this._emit('timeline');
      return { ok: true };
    }
    return this._actionFailed(r, hidden ? 'hide' : 'unhide');
  }

  /** Delete a message (moderator/host, or its author). → {ok, error?} */
  async deleteMessage(messageId) {
    const r = await this.auth.api('DELETE', `/api/messages/${messageId}`);
    if (r.status === 200 || r.status === 404) {
      if (this.timeline.remove(messageId)) this._emit('timeline');
      return { ok: true };
    }
    return this._actionFailed(r, 'delete');
  }

  // --- timeouts and bans (docs/webinar-features.md) ---------------------------------------------

  /**
   * Refused because banned or timed out (any path: the first load, the socket, a poll, a send):
   * stop following, tell the view (`ban` {ban}), and check again just after the timeout ends —
   * and every BAN_RECHECK_MS and when the tab becomes visible, for an unban.
   */
  _banned(ban) {
    if (this.stopped) return false;
    const changed = !this.ban || this.ban.code !== ban.code || this.ban.until !== ban.until;
    this.ban = ban;
    this.fallback = false;
    if (this.pollAbort) this.pollAbort.abort();
    if (changed) {
      this.log.info('chat_banned', { code: ban.code, until: ban.until });
      this._emit('ban', { ban });
    }
    if (this.banTimer !== null) this.env.clearTimeout(this.banTimer);
    this.banTimer = this.env.setTimeout(() => {
      this.banTimer = null;
      this._checkBan();
    }, banRecheckDelay(ban, this.env.now()));
    return false;
  }

  async _checkBan() {
    if (!this.ban || this.stopped || this.banChecking) return;
    this.banChecking = true;
    let r;
    try {
      r = await this.auth.api('GET', `/api/webinars/${this.webinarId}`);
    } finally {
      this.banChecking = false;
    }
    if (!this.ban || this.stopped) return;
    if (banFrom(r.body)) return void this._banned(banFrom(r.body));
    if (r.status === 401) return void this._authLost();
    if (r.status !== 200) {
      if (r.status === 403 || r.status === 404) {
        return void this._fatal(serverErrorText(r.body, r.status, t('error.cannotFollow')), r.status);
      }
      return void this._banned(this.ban); // the server is unreachable: try again later
    }
    this._unbanned();
  }

  /** The ban is over: follow the chat again from where it stopped (the join replays the gap). */
  _unbanned() {
    this.ban = null;
    if (this.banTimer !== null) this.env.clearTimeout(this.banTimer);
    this.banTimer = null;
    this.log.info('chat_unbanned');
    this._emit('ban', { ban: null });
    if (!this.unsubscribe) { // refused before it followed anything: load it all again
      this.started = false;
      this.start();
      return;
    }
    this._emit('webinar'); // the composer is back, as the webinar's settings allow
    this.connection.rejoin(this.topic);
    this._evaluate();
    this.flush();
  }

  /** Staff: the webinar's current bans (for the menu's Unban). */
  async loadBans() {
    const r = await this.auth.api('GET', `/api/webinars/${this.webinarId}/bans`);
    if (r.status !== 200 || !Array.isArray(r.body?.bans)) return;
    this.bans = new Map(r.body.bans.map((b) => [b.user_id,
      b.banned_until ? Date.parse(b.banned_until) : null]));
    this._emit('timeline');
  }

  /** Staff: is this user banned or timed out now (as far as this tab knows)? */
  isBanned(userId) {
    if (!this.bans.has(userId)) return false;
    const until = this.bans.get(userId);
    return until === null || until > this.env.now();
  }

  /** Staff: time a user out for `seconds`, or ban them (`seconds` null). → {ok, error?} */
  async banUser(userId, seconds) {
    const r = await this.auth.api('POST', `/api/webinars/${this.webinarId}/bans`,
      { body: { user_id: userId, duration_s: seconds } });
    if (r.status !== 200 || !r.body?.ban) {
      return this._actionFailed(r, seconds ? 'timeout' : 'ban');
    }
    const until = r.body.ban.banned_until ? Date.parse(r.body.ban.banned_until) : null;
    this.bans.set(userId, until);
    this._emit('timeline');
    return { ok: true, until };
  }

  /** Staff: end a user's ban or timeout. → {ok, error?} */
  async unbanUser(userId) {
    const r = await this.auth.api('DELETE', `/api/webinars/${this.webinarId}/bans/${userId}`);
    if (r.status !== 200) return this._actionFailed(r, 'unban');
    this.bans.delete(userId);
    this._emit('timeline');
    return { ok: true };
  }

  // --- transcript export (staff) -----------------------------------------------------------------

  /**
   * Download the transcript (`csv` or `json`, docs/export.md) with the bearer token, refreshing
   * it once on a 401. → {ok, blob, filename} | {ok: false, error}. The browser holds the file
   * in memory once (a download link cannot carry the Authorization header).
   */
  async downloadTranscript(format) {
    const path = `/api/webinars/${this.webinarId}/export?format=${encodeURIComponent(format)}`;
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const token = this.auth.accessToken;
      let response;
      try {
        response = await this.auth.fetch(path, { headers: token
          ? { Authorization: `Bearer ${token}` } : {}, cache: 'no-store' });
      } catch {
        return this._actionFailed({ status: 0, body: null }, 'download');
      }
      if (response.status === 401 && attempt === 0 && await this.auth.refresh(token)) continue;
      if (!response.ok) {
        let body = null;
        try {
          body = await response.json();
        } catch {
          body = null;
        }
        return this._actionFailed({ status: response.status, body }, 'download');
      }
      const disposition = response.headers.get('Content-Disposition') || '';
      const match = /filename="([^"]+)"/.exec(disposition);
      const filename = match ? match[1] : `webinar-${this.webinarId}-transcript.${format}`;
      return { ok: true, blob: await response.blob(), filename };
    }
    return { ok: false, error: t('error.sessionExpired') };
  }

  // --- Q&A (docs/webinar-features.md, "Q&A") ----------------------------------------------------

  /** The list with the viewer's own votes, into the board. → {ok, error?} */
  async loadQuestions() {
    const r = await this.auth.api('GET', `/api/webinars/${this.webinarId}/questions?sort=votes`);
    if (this.stopped) return { ok: false };
    if (r.status !== 200 || !r.body?.success) {
      this.log.warn('questions_load_failed', { status: r.status });
      return { ok: false, error: serverErrorText(r.body, r.status) };
    }
    if (this.questions.load(r.body.questions)) this._emit('questions');
    return { ok: true };
  }

  /** Ask a question: idempotent (one clientMsgId, re-sent after a network error or a 5xx; a
   * 409 carries the stored question). → {ok, question?, error?} */
  async askQuestion(content) {
    const clientMsgId = newClientMsgId();
    let r = null;
    for (let attempt = 0; attempt < 4; attempt += 1) {
      if (attempt > 0) {
        await new Promise((resolve) => {
          this.env.setTimeout(resolve, retryDelay(attempt, this.config, this.env.random));
        });
      }
      if (this.stopped) return { ok: false, error: 'Stopped' };
      r = await this.auth.api('POST', `/api/webinars/${this.webinarId}/questions`,
        { body: { content, clientMsgId }, timeoutMs: 10000 });
      if (r.status !== 0 && r.status < 500) break;
    }
    if ((r.status === 200 || r.status === 409) && r.body?.question) {
      this._questionAnswer(r.body.question);
      return { ok: true, question: r.body.question };
    }
    const error = serverErrorText(r.body, r.status);
    this.log.warn('question_failed', { status: r.status, error });
    return { ok: false, error, retryAfterS: r.body?.retry_after ?? null };
  }

  /** Upvote (`voted`) or take the vote back. → {ok, error?} */
  async voteQuestion(id, voted) {
    const r = await this.auth.api('POST', `/api/questions/${id}/vote`, { body: { voted } });
    if (r.status !== 200 || !r.body?.question) return this._actionFailed(r, 'vote');
    this.questions.rememberVote(id, r.body.voted);
    this._questionAnswer(r.body.question, true);
    return { ok: true };
  }

  /** Staff: `answered`, `dismissed` or `open`. → {ok, error?} */
  async setQuestionStatus(id, status) {
    const r = await this.auth.api('POST', `/api/questions/${id}/status`, { body: { status } });
    if (r.status !== 200 || !r.body?.question) {
      return this._actionFailed(r, 'questionStatus');
    }
    this._questionAnswer(r.body.question);
    return { ok: true };
  }

  // An answer carries the question's state at its seq: applied like the event it produced.
  _questionAnswer(question, force = false) {
    if (this.questions.apply(question.id, question, question.seq) || force) {
      this._emit('questions');
    }
  }

  // --- host controls: chat mode, slow mode, pinned announcement --------------------------------

  /** Host: `everyone` | `hosts_only` | `read_only`. → {ok, error?} */
  setChatMode(mode) {
    return this._changeRoom('PATCH', '', { chat_mode: mode }, 'chatMode');
  }

  /** Host: seconds between two messages of an attendee (0: off). → {ok, error?} */
  setSlowMode(seconds) {
    return this._changeRoom('PATCH', '', { slow_mode_seconds: seconds }, 'slowMode');
  }

  /** Staff: pin an announcement (replacing the current one), or unpin with null. */
  setPinned(content) {
    return content === null
      ? this._changeRoom('DELETE', '/pin', undefined, 'unpin')
      : this._changeRoom('PUT', '/pin', { content }, 'pin');
  }

  async _changeRoom(method, suffix, body, action) {
    const r = await this.auth.api(method, `/api/webinars/${this.webinarId}${suffix}`, { body });
    if (r.status !== 200 || !r.body?.webinar) return this._actionFailed(r, action);
    // The answer is the room state at its seq: applied like the ROOM event it produced (which
    // then changes nothing), so the host's controls never flicker back.
    const w = r.body.webinar;
    this._applyRoom({ seq: w.last_seq, type: 'ROOM', new: w }, 'answer');
    return { ok: true };
  }

  /** A staff action or vote failed: a notice says which (`action`: an i18n `failed.*` key). */
  _actionFailed(r, action) {
    const error = serverErrorText(r.body, r.status);
    this.log.warn('moderation_failed', { action, status: r.status, error });
    this._emit('notice', { level: 'error', text: t(`failed.${action}`, { error }) });
    return { ok: false, error };
  }
}

// --- the tab ----------------------------------------------------------------------------------

/**
 * Everything one tab shares: the session, the socket, the monitor, and one ChatClient per
 * webinar however many views show it (`acquire`/`release` count them).
 */
export class ChatRuntime {
  constructor({ auth, monitor, logger, config = readConfig(null), env = browserEnv(),
    storage = globalThis.localStorage, realtimeUrl }) {
    this.auth = auth;
    this.monitor = monitor;
    this.log = logger;
    this.config = config;
    this.env = env;
    this.storage = storage;
    this.connection = new RealtimeConnection({ url: realtimeUrl, auth, config, env, logger,
      monitor });
    this.clients = new Map(); // webinarId → {client, refs}
    this.offToken = auth.onChange((token) => this.connection.tokenChanged(token));
  }

  /** The chat of `webinarId`, started on first use. Call release() once per acquire(). */
  acquire(webinarId) {
    let slot = this.clients.get(webinarId);
    if (!slot) {
      const client = new ChatClient({ webinarId, auth: this.auth, connection: this.connection,
        storage: this.storage, config: this.config, env: this.env, logger: this.log,
        monitor: this.monitor });
      slot = { client, refs: 0, started: client.start() };
      this.clients.set(webinarId, slot);
    }
    slot.refs += 1;
    return slot.client;
  }

  release(webinarId) {
    const slot = this.clients.get(webinarId);
    if (!slot) return;
    slot.refs -= 1;
    if (slot.refs > 0) return;
    slot.client.stop();
    this.clients.delete(webinarId);
  }

  online() {
    this.connection.online();
    for (const { client } of this.clients.values()) client.resume();
  }

  offline() {
    for (const { client } of this.clients.values()) client.offline();
  }

  visible() {
    for (const { client } of this.clients.values()) client.resume();
  }

  close() {
    for (const { client } of this.clients.values()) client.stop();
    this.clients.clear();
    this.connection.stop();
    this.offToken();
    this.monitor?.stop();
  }
}
