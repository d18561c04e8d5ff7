// Pure logic of the browser chat client: no DOM, no network, no timers, no storage.
//
// Everything here takes plain values and returns plain values, so node's test runner covers it
// (tests/js/) and chat-client.js stays a thin adapter that does the waiting. Design note:
// docs/client.md; the wire protocol it speaks: docs/realtime.md. Texts come from i18n.js (the
// page's language; English in tests unless they choose another).

import { serverErrorText, t } from './i18n.js';

/** Every timing constant of the client. Each can be overridden from the page URL (readConfig). */
export const DEFAULTS = Object.freeze({
  // SPEC §5: a create call is aborted after 10 s and the message is kept as pending.
  sendTimeoutMs: 10000,
  // Re-sends of a pending message: 1 s, 2 s, 4 s … 30 s; after this many attempts it is marked
  // failed and waits for the user's Retry (about two and a half minutes of trying in total).
  retryBaseMs: 1000,
  retryCapMs: 30000,
  maxSendAttempts: 8,
  // SPEC §5: 500 ms × 2^(n−1), capped at 15 s — fast first retries for a blip, slow enough not to
  // stampede a restarted server.
  reconnectBaseMs: 500,
  reconnectCapMs: 15000,
  // Long-poll the change feed after this many consecutive socket failures …
  fallbackAfterFailures: 3,
  // … or this long without any frame (two server heartbeat periods: docs/realtime.md).
  silenceMs: 10000,
  // Client heartbeat: the server closes a socket that sent nothing for 30 s.
  heartbeatMs: 5000,
  // Between failed long-poll requests: 3 s ± 400 ms, so that a restarted server is not hit by
  // every fallback client in the same millisecond.
  pollRetryMs: 3000,
  pollJitterMs: 400,
  // Long-poll wait handed to the server (it allows ≤ 25 s; proxies often cut idle requests at 30 s).
  pollWaitS: 20,
  // The send button stays disabled this long after a send: a double click or an Enter bounce is
  // one message.
  sendCooldownMs: 1000,
  // Monitoring events are sent in batches at most this often.
  metricsFlushMs: 5000,
  logLevel: 'info',
});

// [min, max] accepted from the URL: small enough for tests, never zero or absurd.
const LIMITS = {
  sendTimeoutMs: [200, 120000],
  retryBaseMs: [50, 600000],
  retryCapMs: [50, 600000],
  maxSendAttempts: [1, 100],
  reconnectBaseMs: [50, 60000],
  reconnectCapMs: [50, 300000],
  fallbackAfterFailures: [1, 100],
  silenceMs: [500, 300000],
  heartbeatMs: [200, 60000],
  pollRetryMs: [50, 600000],
  pollJitterMs: [0, 60000],
  pollWaitS: [0, 25],
  sendCooldownMs: [0, 10000],
  metricsFlushMs: [100, 600000],
};
const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'];

/**
 * The client's configuration: DEFAULTS overridden by numeric query parameters of the same name
 * (e.g. `?sendTimeoutMs=1500&silenceMs=2000`) and `log=debug`. Anything out of range or not a
 * number is ignored — a hand-edited URL must never break the chat.
 * @param {URLSearchParams|Record<string,string>|null} params
 */
export function readConfig(params, defaults = DEFAULTS) {
  const config = { ...defaults };
  const get = (name) => {
    if (!params) return null;
    if (typeof params.get === 'function') return params.get(name);
    return Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : null;
  };
  for (const [name, [min, max]] of Object.entries(LIMITS)) {
    const raw = get(name);
    if (raw === null || raw === '') continue;
    const value = Number(raw);
    if (Number.isFinite(value) && value >= min && value <= max) config[name] = value;
  }
  const level = get('log');
  if (level && LOG_LEVELS.includes(level)) config.logLevel = level;
  return Object.freeze(config);
}

// --- timing ---------------------------------------------------------------------------------

/**
 * Delay before attempt `n` (1-based) of an exponential backoff: base × 2^(n−1), capped, with
 * ±20 % jitter (and still never above the cap). `random` is Math.random or a test's fake.
 */
export function backoffDelay(attempt, baseMs, capMs, random = Math.random) {
  const n = Math.max(1, Math.floor(attempt));
  const raw = Math.min(capMs, baseMs * 2 ** Math.min(n - 1, 30));
  const jittered = raw * (0.8 + 0.4 * random());
  return Math.round(Math.min(capMs, jittered));
}

/** Reconnect delay for attempt `n` (SPEC §5: 500 ms × 2^(n−1), ≤ 15 s, jitter). */
export function reconnectDelay(attempt, config = DEFAULTS, random = Math.random) {
  return backoffDelay(attempt, config.reconnectBaseMs, config.reconnectCapMs, random);
}

/** Re-send delay after `attempts` failed attempts of one message. */
export function retryDelay(attempts, config = DEFAULTS, random = Math.random) {
  return backoffDelay(attempts, config.retryBaseMs, config.retryCapMs, random);
}

/** Wait between failed long-poll requests: 3 s ± 400 ms. */
export function pollRetryDelay(config = DEFAULTS, random = Math.random) {
  return Math.max(0, Math.round(config.pollRetryMs + (random() * 2 - 1) * config.pollJitterMs));
}

// --- connection decisions -------------------------------------------------------------------

/**
 * Whether the client should (still) read the change feed over HTTP.
 * `failures`: consecutive socket attempts that never reached `joined`; `silentMs`: time since the
 * socket last proved alive (a frame, or the start of the current outage).
 */
export function shouldUseFallback({ socketLive, failures, silentMs }, config = DEFAULTS) {
  if (socketLive) return false;
  return failures >= config.fallbackAfterFailures || silentMs >= config.silenceMs;
}

/** Whether the long-poll loop may run now: only in fallback, with the tab visible and online. */
export function pollAllowed({ fallback, visible, online }) {
  return Boolean(fallback && visible && online);
}

/**
 * The status shown to the user: one of connecting / live / reconnecting / fallback / offline.
 * `connectedBefore`: a socket of this chat was joined at least once. Until then a failed attempt
 * is still "connecting" — telling a newcomer we are *re*connecting suggests something was lost.
 * `pollLive`: the backup connection's last request was answered. Fallback that cannot reach the
 * server either (it is down, restarting) is not "live": it is reconnecting.
 */
export function connectionStatus({ online, socketLive, fallback, pollLive = false,
  connectedBefore = false }) {
  if (!online) return 'offline';
  if (socketLive) return 'live';
  if (fallback && pollLive) return 'fallback';
  return connectedBefore ? 'reconnecting' : 'connecting';
}

// --- send results ---------------------------------------------------------------------------

/**
 * What to do with the answer to `POST /api/messages/create`.
 * status 0 means the request never got an answer (network error, abort, timeout).
 * `retryAfter` is the answer's Retry-After header, if any.
 * → {kind: 'stored', message, duplicate} | {kind: 'retry', error, retryAfterS?}
 *   | {kind: 'rejected', error, code, retryAfterS} | {kind: 'auth', error}
 * A 429 of slow mode is the user's to wait out (the text goes back to the input); any other 429
 * (`rate_limited`: too many messages too fast, or a proxy's limit) is re-sent with the same
 * client_msg_id after its Retry-After (`retryAfterS`, whole seconds, at least 1).
 */
export function classifySendResult(status, body, retryAfter = null) {
  const error = body && typeof body.error === 'string' && body.error
    ? serverErrorText(body, status) : '';
  if (status === 429 && !(body && body.code === 'slow_mode')) {
    return { kind: 'retry', error: error || t('error.tooManyMessages'), retryAfterS:
      retryAfterSeconds(retryAfter, body) };
  }
  if (status === 200 && body && body.success && isMessage(body.message)) {
    return { kind: 'stored', message: body.message, duplicate: false };
  }
  if (status === 409 && body && isMessage(body.message)) {
    // The same client_msg_id was stored by an earlier attempt: the body is that row.
    return { kind: 'stored', message: body.message, duplicate: true };
  }
  if (status === 401) return { kind: 'auth', error: error || t('error.sessionExpired') };
  if (status === 0 || status === 408 || status >= 500 || status === 409 || status === 200) {
    // No answer, a server fault, or an answer we cannot use: the same id is safe to re-send.
    return { kind: 'retry', error: error
      || (status === 0 ? t('error.noConnection') : t('error.serverStatus', { status })) };
  }
  const retryAfterS = status === 429 && body && Number.isFinite(body.retry_after)
    ? Math.ceil(body.retry_after) : null;
  return {
    kind: 'rejected',
    error: error || t('error.notAccepted', { status }),
    code: (body && body.code) || String(status),
    retryAfterS,
  };
}

/** Retry-After (delta-seconds; an HTTP-date is rare enough to fall back on the body) → s ≥ 1. */
export function retryAfterSeconds(header, body) {
  const fromHeader = typeof header === 'string' && /^\s*\d+\s*$/.test(header)
    ? Number(header) : NaN;
  const fromBody = body && Number.isFinite(body.retry_after) ? Math.ceil(body.retry_after) : NaN;
  const seconds = Number.isFinite(fromHeader) ? fromHeader : fromBody;
  return Number.isFinite(seconds) ? Math.max(1, seconds) : 1;
}

function isMessage(value) {
  return Boolean(value && typeof value === 'object' && value.id !== undefined && value.id !== null);
}

// --- change sequencing ----------------------------------------------------------------------

/**
 * Order incoming change events against the last applied seq.
 * → {ready: events to apply now (contiguous from lastSeq+1), held: events after a gap,
 *    gap: true if something between lastSeq and `held` is missing, stale: events dropped}
 * Events with seq ≤ lastSeq or a repeated seq are dropped (never applied twice).
 */
export function sequenceEvents(lastSeq, events) {
  const bySeq = new Map();
  let stale = 0;
  for (const event of events) {
    if (!event || !Number.isInteger(event.seq)) { stale += 1; continue; }
    if (event.seq <= lastSeq || bySeq.has(event.seq)) { stale += 1; continue; }
    bySeq.set(event.seq, event);
  }
  const sorted = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
  const ready = [];
  let next = lastSeq + 1;
  let i = 0;
  while (i < sorted.length && sorted[i].seq === next) {
    ready.push(sorted[i]);
    next += 1;
    i += 1;
  }
  const held = sorted.slice(i);
  return { ready, held, gap: held.length > 0, stale };
}

// --- the timeline ---------------------------------------------------------------------------

/** Key of an optimistic (not yet stored) message. */
export function tempId(clientMsgId) {
  return `temp-${clientMsgId}`;
}

/**
 * The messages one viewer sees: server messages ordered by id, then this tab's unsent messages
 * in the order they were written. Server messages and optimistic ones are matched by
 * `client_msg_id` only (legacy rows without one: same author and content).
 */
export class Timeline {
  constructor({ staff = false, userId = null } = {}) {
    this.staff = staff;
    this.userId = userId;
    this.server = new Map(); // id → message
    this.optimistic = new Map(); // client_msg_id → {client_msg_id, content, state, error, order}
    this.deleted = new Set(); // ids seen deleted: a late answer must not bring one back
    this.order = 0;
    this.version = 0;
    this._sorted = null;
  }

  _changed() {
    this._sorted = null;
    this.version += 1;
  }

  /** Add or update a message from the server (list API, change event, send answer). */
  upsert(message) {
    if (!isMessage(message)) return { changed: false, resolved: null };
    const resolved = this.matchOptimistic(message);
    if (resolved) this.optimistic.delete(resolved);
    const previous = this.server.get(message.id);
    if (this.deleted.has(message.id)
        || (previous && Number.isInteger(previous.seq) && Number.isInteger(message.seq)
          && message.seq < previous.seq)) {
      // Deleted already, or an older state than the one shown (a slow HTTP answer that arrives
      // after the change feed moved on).
      if (resolved) this._changed();
      return { changed: Boolean(resolved), resolved };
    }
    if (message.hidden && !this.staff) {
      // Attendees never keep a hidden message (it arrives redacted anyway).
      const had = this.server.delete(message.id);
      if (had || resolved) this._changed();
      return { changed: had || Boolean(resolved), resolved };
    }
    if (previous && sameMessage(previous, message) && !resolved) {
      return { changed: false, resolved };
    }
    this.server.set(message.id, previous ? { ...previous, ...message } : message);
    this._changed();
    return { changed: true, resolved };
  }

  /** The client_msg_id of the optimistic message `message` stands for, or null. */
  matchOptimistic(message) {
    if (this.userId !== null && message.user_id !== this.userId) return null;
    const id = message.client_msg_id;
    if (id) return this.optimistic.has(id) ? id : null;
    // A legacy row (no client_msg_id) can only stand for an optimistic message without one.
    for (const [key, entry] of this.optimistic) {
      if (entry.legacy && message.content === entry.content) return key;
    }
    return null;
  }

  remove(id) {
    this.deleted.add(id);
    if (this.server.delete(id)) {
      this._changed();
      return true;
    }
    return false;
  }

  has(id) {
    return this.server.has(id);
  }

  get(id) {
    return this.server.get(id);
  }

  /** Show a message of this tab that is not stored yet. */
  addOptimistic({ client_msg_id, content, state = 'sending', error = null, created_at = null }) {
    // An entry without a client_msg_id (written by an old client) gets a local key of its own.
    const key = client_msg_id || `legacy-${this.order}`;
    if (this.optimistic.has(key)) return false;
    this.optimistic.set(key, {
      client_msg_id: key, content, state, error, created_at, order: this.order++,
      legacy: !client_msg_id,
    });
    this._changed();
    return true;
  }

  /** Change the local state of an optimistic message (sending / pending / failed). */
  setLocalState(clientMsgId, state, error = null) {
    const entry = this.optimistic.get(clientMsgId);
    if (!entry || (entry.state === state && entry.error === error)) return false;
    entry.state = state;
    entry.error = error;
    this._changed();
    return true;
  }

  removeOptimistic(clientMsgId) {
    if (this.optimistic.delete(clientMsgId)) {
      this._changed();
      return true;
    }
    return false;
  }

  /** Oldest server message id (for history paging), or null. */
  oldestId() {
    let min = null;
    for (const id of this.server.keys()) if (min === null || id < min) min = id;
    return min;
  }

  /**
   * Everything to render, in order. Server entries: {key: id, kind: 'server', message};
   * optimistic: {key: 'temp-<id>', kind: 'local', entry}.
   */
  items() {
    if (this._sorted) return this._sorted;
    const server = [...this.server.values()].sort((a, b) => a.id - b.id)
      .map((message) => ({ key: String(message.id), kind: 'server', message }));
    const local = [...this.optimistic.values()].sort((a, b) => a.order - b.order)
      .map((entry) => ({ key: tempId(entry.client_msg_id), kind: 'local', entry }));
    this._sorted = server.concat(local);
    return this._sorted;
  }
}

function sameMessage(a, b) {
  return a.content === b.content && a.hidden === b.hidden && a.seq === b.seq;
}

/**
 * Apply one change event (docs/realtime.md, "Apply rules for clients") to the timeline.
 * → {applied: bool, warning: string|null, resolved: client_msg_id|null}
 */
export function applyChange(timeline, event) {
  const type = event && event.type;
  const neu = event && event.new;
  const old = event && event.old;
  const id = (neu && neu.id !== undefined && neu.id !== null) ? neu.id
    : (old && old.id !== undefined && old.id !== null) ? old.id : null;
  if (type !== 'INSERT' && type !== 'UPDATE' && type !== 'DELETE') {
    return { applied: false, warning: `unknown change type ${JSON.stringify(type)}`, resolved: null };
  }
  if (id === null) {
    return { applied: false, warning: `${type} without a message id ignored`, resolved: null };
  }
  if (type === 'DELETE' || !neu) {
    // DELETE, or an INSERT/UPDATE replayed for a message deleted since.
    return { applied: timeline.remove(id), warning: null, resolved: null };
  }
  const { changed, resolved } = timeline.upsert(neu);
  return { applied: changed, warning: null, resolved };
}

// --- room state (docs/webinar-features.md) ------------------------------------------------------

export const CHAT_MODES = ['everyone', 'hosts_only', 'read_only'];
export const SLOW_MODE_CHOICES = [0, 5, 10, 30, 60, 120];

/**
 * Apply a ROOM event to the webinar as the page holds it. A ROOM event carries the whole room
 * state, so the state of the highest seq applied is the current one: an event at or below
 * `roomSeq` (the webinar was read after it) changes nothing.
 * → {webinar, roomSeq, changed: ['chat_mode'|'slow_mode_seconds'|'pinned', ...]}
 */
export function applyRoomEvent(webinar, roomSeq, event) {
  const room = event && event.new;
  if (!webinar || !room || typeof event.seq !== 'number' || event.seq <= roomSeq
    || !CHAT_MODES.includes(room.chat_mode)) {
    return { webinar, roomSeq, changed: [] };
  }
  const pinned = room.pinned && typeof room.pinned.content === 'string' ? room.pinned : null;
  const next = { ...webinar, chat_mode: room.chat_mode, chat_open: room.chat_mode !== 'read_only',
    slow_mode_seconds: Number(room.slow_mode_seconds) || 0, pinned };
  const changed = [];
  if (next.chat_mode !== webinar.chat_mode) changed.push('chat_mode');
  if (next.slow_mode_seconds !== webinar.slow_mode_seconds) changed.push('slow_mode_seconds');
  if ((pinned && pinned.content) !== (webinar.pinned && webinar.pinned.content)
    || (pinned && pinned.pinned_at) !== (webinar.pinned && webinar.pinned.pinned_at)) {
    changed.push('pinned');
  }
  return { webinar: next, roomSeq: event.seq, changed };
}

/** What the composer may do for this viewer in this room state. */
export function composerState(webinar, { staff = false } = {}) {
  const mode = webinar ? webinar.chat_mode : 'everyone';
  if (mode === 'read_only' && !staff) return { canPost: false, reason: 'read_only' };
  if (mode === 'hosts_only' && !staff) return { canPost: true, reason: 'hosts_only' };
  return { canPost: true, reason: null };
}

/** The notice a live room change gets, for a viewer (null: nothing worth saying). */
export function roomNotice(webinar, changed, { staff = false } = {}) {
  if (!webinar) return null;
  const parts = [];
  if (changed.includes('chat_mode')) {
    if (webinar.chat_mode === 'read_only') {
      parts.push(t(staff ? 'room.readOnlyStaff' : 'room.readOnly'));
    } else if (webinar.chat_mode === 'hosts_only') {
      parts.push(t(staff ? 'room.hostsOnlyStaff' : 'room.hostsOnly'));
    } else {
      parts.push(t('room.everyone'));
    }
  }
  if (changed.includes('slow_mode_seconds')) {
    const s = webinar.slow_mode_seconds;
    parts.push(s > 0 ? t('room.slowOn', { n: s }) : t('room.slowOff'));
  }
  return parts.length ? parts.join(' ') : null;
}

// --- presentation decisions -------------------------------------------------------------------

/**
 * The label of an unsent message of this tab. A pending message waits for the network while the
 * browser is offline (no attempt is spent, chat-client.js `_attempt`) and is re-sent with backoff
 * otherwise; saying "retrying" while nothing is tried would be untrue.
 */
export function localStateLabel(state, { online = true } = {}) {
  if (state === 'sending') return t('state.sending');
  if (state === 'pending') return t(online ? 'state.retrying' : 'state.waitingForNetwork');
  if (state === 'failed') return t('state.failed');
  return '';
}

/**
 * What the "Message actions" menu of a stored message offers this viewer, in menu order:
 * staff hide/unhide and delete anything; an author deletes their own. Unsent messages have no
 * menu (their Retry / Discard are shown inline).
 */
export function messageActions({ kind, staff = false, own = false, hidden = false,
  bannable = false, authorBanned = false }) {
  if (kind !== 'server') return [];
  const actions = [];
  if (staff) actions.push(hidden ? 'unhide' : 'hide');
  if (staff || own) actions.push('delete');
  // Another attendee's message (`bannable`: not own, not staff's): time them out, ban, unban.
  if (staff && bannable) actions.push(...(authorBanned ? ['unban'] : ['timeout', 'ban']));
  return actions;
}

// --- timeouts and bans (docs/webinar-features.md, "Timeouts and bans") ------------------------

/** The page's timeout choices in seconds (the API takes any 1–31536000 s). */
export const TIMEOUT_CHOICES = Object.freeze([10, 60, 300, 1800, 86400]);
export const BAN_CODES = new Set(['banned', 'timed_out']);
// A timed-out client re-joins this long after its timeout ends (clocks disagree a little), and a
// denied one re-checks at least this often (an unban cannot reach a client that receives nothing).
export const BAN_MARGIN_MS = 1500;
export const BAN_RECHECK_MS = 30000;

/**
 * The ban in an error answer or frame (`{code: 'banned'|'timed_out', banned_until}`), or null.
 * → {code, until: ms since epoch | null (permanent), message}
 */
export function banFrom(body) {
  if (!body || !BAN_CODES.has(body.code)) return null;
  const until = body.banned_until ? Date.parse(body.banned_until) : NaN;
  return { code: body.code, until: Number.isFinite(until) ? until : null,
    message: String(body.error || body.message || '') };
}

/** When to check again whether a ban is over: just after a timeout ends, else periodically. */
export function banRecheckDelay(ban, now, { marginMs = BAN_MARGIN_MS,
  everyMs = BAN_RECHECK_MS } = {}) {
  if (ban.until === null) return everyMs;
  return Math.max(250, Math.min(everyMs, ban.until - now + marginMs));
}

// Consecutive messages of one author this close together share one name and avatar (the gap is
// measured from the previous message, as chat apps do: a steady conversation stays one block).
export const GROUP_GAP_MS = 5 * 60 * 1000;

/** 'YYYY-MM-DD' of a time in the viewer's local time zone (sorts like the dates it names). */
export function localDayKey(ms) {
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, '0');
  return `${String(d.getFullYear()).padStart(4, '0')}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/**
 * Day separators and author groups of a rendered timeline, decided from scratch on every render
 * so that an insertion out of order, a hidden or deleted message, or prepended history can never
 * leave a stale name or separator behind.
 * `entries`: in display order, [{key, author (user id or null), at (ms since epoch or null)}].
 * → [{key, groupStart, day: null | {key: 'YYYY-MM-DD', kind: 'today'|'yesterday'|'date', at}}],
 *   `day` set on the first entry of each local day (the separator goes before it).
 * A day only ever moves forward: an entry dated before the day already shown (clocks disagree,
 * or no date at all) stays under the current separator instead of opening a second one for a
 * day that is already on screen.
 */
export function timelineLayout(entries, { now, groupGapMs = GROUP_GAP_MS } = {}) {
  const today = localDayKey(now);
  const n = new Date(now);
  const yesterday = localDayKey(new Date(n.getFullYear(), n.getMonth(), n.getDate() - 1).getTime());
  const out = [];
  let day = null;
  let prev = null;
  for (const entry of entries) {
    const at = Number.isFinite(entry.at) ? entry.at : null;
    const key = at === null ? null : localDayKey(at);
    let separator = null;
    if (key !== null && (day === null || key > day)) {
      day = key;
      separator = { key, kind: key === today ? 'today' : key === yesterday ? 'yesterday' : 'date',
        at };
    }
    const groupStart = !prev || separator !== null || entry.author === null
      || entry.author === undefined || entry.author !== prev.author || at === null
      || prev.at === null || Math.abs(at - prev.at) > groupGapMs;
    out.push({ key: entry.key, groupStart, day: separator });
    prev = { author: entry.author, at };
  }
  return out;
}

/** The text of a day separator: "Today", "Yesterday", else `formatDate(at)` (Intl, the UI's). */
export function dayLabel(day, formatDate) {
  if (day.kind === 'today') return t('day.today');
  if (day.kind === 'yesterday') return t('day.yesterday');
  return formatDate(day.at);
}

// --- outbox ---------------------------------------------------------------------------------

/** Serialise the unsent messages for browser storage. */
export function serializeOutbox(entries) {
  return JSON.stringify({
    v: 1,
    entries: entries.map((e) => ({
      client_msg_id: e.client_msg_id,
      content: e.content,
      created_at: e.created_at,
      attempts: e.attempts || 0,
      state: e.state === 'failed' ? 'failed' : 'pending',
      error: e.error || null,
    })),
  });
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Read an outbox written by serializeOutbox; anything malformed is dropped, never thrown. */
export function parseOutbox(text) {
  if (!text) return [];
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    return [];
  }
  if (!data || data.v !== 1 || !Array.isArray(data.entries)) return [];
  const seen = new Set();
  const out = [];
  for (const e of data.entries) {
    if (!e || typeof e.content !== 'string' || !e.content.trim()) continue;
    if (typeof e.client_msg_id !== 'string' || !UUID_RE.test(e.client_msg_id)) continue;
    if (seen.has(e.client_msg_id)) continue;
    seen.add(e.client_msg_id);
    out.push({
      client_msg_id: e.client_msg_id,
      content: e.content,
      created_at: typeof e.created_at === 'string' ? e.created_at : null,
      attempts: Number.isInteger(e.attempts) && e.attempts >= 0 ? e.attempts : 0,
      state: e.state === 'failed' ? 'failed' : 'pending',
      error: typeof e.error === 'string' ? e.error : null,
    });
  }
  return out;
}

// --- small helpers --------------------------------------------------------------------------

/** A v4 UUID; `crypto` is globalThis.crypto (browsers and node ≥ 19). */
export function newClientMsgId(cryptoImpl = globalThis.crypto) {
  if (cryptoImpl && typeof cryptoImpl.randomUUID === 'function') return cryptoImpl.randomUUID();
  const b = cryptoImpl.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The deterministic realtime topic of a webinar's chat. */
export function topicFor(webinarId) {
  return `webinar:${webinarId}:messages`;
}

/** Only same-site chat paths may be used as a post-login redirect. */
export function safeNextPath(next) {
  if (typeof next !== 'string') return null;
  return /^\/webinars\/\d{1,18}(\?[A-Za-z0-9_=&.%-]*)?$/.test(next) ? next : null;
}

// --- Q&A (docs/webinar-features.md, "Q&A") ------------------------------------------------------

export const QUESTION_SORTS = ['votes', 'newest'];
export const QUESTION_STATUSES = ['open', 'answered', 'dismissed'];

/**
 * The webinar's questions as this viewer sees them, kept from QUESTION events, list answers and
 * the viewer's own answers with one rule: per question, the state of the highest seq wins, so a
 * page that replayed, long-polled or reloaded ends where one that watched live does. A `null`
 * state or a redacted stub (`{id, webinar_id, hidden: true, seq}`: dismissed, for attendees)
 * removes it from view. The viewer's own votes (`voted`) are personal and never in events: they
 * come from the list and from their own toggles.
 */
export class QuestionBoard {
  constructor() {
    this.questions = new Map(); // id → payload
    this.seqs = new Map(); // id → seq of the state held (removed ones too)
    this.votes = new Map(); // id → the viewer's vote
  }

  /** Take `state` of question `id` at feed position `seq`. → whether it changed anything. */
  apply(id, state, seq) {
    if (!Number.isInteger(id) || !Number.isInteger(seq)) return false;
    if (seq <= (this.seqs.get(id) ?? -1)) return false;
    this.seqs.set(id, seq);
    if (!state || state.hidden === true) return this.questions.delete(id);
    const { voted, ...shared } = state;
    this.questions.set(id, shared);
    return true;
  }

  /** A QUESTION event `{seq, type, new, old: {id}}`. */
  applyEvent(event) {
    const id = event?.old?.id ?? event?.new?.id;
    return this.apply(id, event?.new ?? null, event?.seq);
  }

  /** A list answer's questions, each with the viewer's `voted`. → whether anything changed. */
  load(questions) {
    let changed = false;
    for (const q of questions || []) {
      if (this.apply(q.id, q, q.seq)) changed = true;
      if (typeof q.voted === 'boolean' && this.votes.get(q.id) !== q.voted) {
        this.votes.set(q.id, q.voted);
        changed = true;
      }
    }
    return changed;
  }

  rememberVote(id, voted) {
    this.votes.set(id, Boolean(voted));
  }

  voted(id) {
    return this.votes.get(id) === true;
  }

  get(id) {
    const q = this.questions.get(id);
    return q ? { ...q, voted: this.voted(id) } : null;
  }

  get size() {
    return this.questions.size;
  }

  /** Open questions shown (the tab's count). */
  openCount() {
    let n = 0;
    for (const q of this.questions.values()) if (q.status === 'open') n += 1;
    return n;
  }

  /** The questions in the server's orders: `votes` (most first, then oldest) or `newest`. */
  sorted(by = 'votes') {
    const list = [...this.questions.values()];
    if (by === 'newest') list.sort((a, b) => b.id - a.id);
    else list.sort((a, b) => (b.votes - a.votes) || (a.id - b.id));
    return list.map((q) => ({ ...q, voted: this.voted(q.id) }));
  }
}

/** The staff's buttons for a question of `status`; attendees get none. */
export function questionActions({ staff = false, status = 'open' } = {}) {
  if (!staff) return [];
  if (status === 'open') return ['answered', 'dismissed'];
  if (status === 'answered') return ['open', 'dismissed'];
  return ['open'];
}

/** The label of a staff button of questionActions(). */
export function questionActionText(action) {
  return t(`qa.action.${action}`);
}
