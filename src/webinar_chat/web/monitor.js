// The one way the browser client reports what happens to it: a small leveled logger and the
// monitoring events of SPEC §7 (fallback_activated, reconnect_attempt, send_timeout, send_success,
// send_error), batched to `POST /api/metrics/events`. A server without that route (404/405) turns
// the sender off quietly; the events still reach the logger.

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

/**
 * A logger with the server's levels. Lines below `level` are dropped; `sink` is `console` or a
 * test's collector with the same methods.
 */
export function createLogger({ level = 'info', sink = globalThis.console, name = 'webinar-chat' } = {}) {
  const threshold = LEVELS[level] ?? LEVELS.info;
  const emit = (lvl) => (event, context) => {
    if (LEVELS[lvl] < threshold || !sink) return;
    const write = sink[lvl] || sink.log;
    if (context === undefined) write.call(sink, `[${name}] ${event}`);
    else write.call(sink, `[${name}] ${event}`, context);
  };
  return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error'), level };
}

export const EVENT_TYPES = Object.freeze([
  'fallback_activated', 'reconnect_attempt', 'send_timeout', 'send_success', 'send_error',
]);

// At most this many events wait for the endpoint; beyond it the oldest are dropped (a client
// must not grow without bound while the metrics route is down).
const MAX_QUEUE = 500;
// One request carries at most this many events.
const MAX_BATCH = 100;

/**
 * Collects monitoring events and sends them in batches. `send(events)` resolves to the HTTP status
 * (0 = no answer); the page wires it to fetch with the access token.
 */
export class Monitor {
  constructor({ send = null, logger = createLogger(), context = {}, flushMs = 5000,
    now = () => Date.now(), setTimer = globalThis.setTimeout?.bind(globalThis),
    clearTimer = globalThis.clearTimeout?.bind(globalThis) } = {}) {
    this.sendBatch = send;
    this.log = logger;
    this.context = { ...context };
    this.flushMs = flushMs;
    this.now = now;
    this.setTimer = setTimer;
    this.clearTimer = clearTimer;
    this.queue = [];
    this.enabled = Boolean(send);
    this.timer = null;
    this.sending = false;
    this.lastEventAt = null;
    this.counts = Object.fromEntries(EVENT_TYPES.map((t) => [t, 0]));
  }

  /** Set webinarId / userId once they are known. */
  setContext(fields) {
    Object.assign(this.context, fields);
  }

  /** Record one event; `metadata` e.g. {reconnectTries, errorMessage}. */
  track(type, metadata = {}) {
    const at = this.now();
    const event = {
      type,
      timestamp: new Date(at).toISOString(),
      webinarId: this.context.webinarId ?? null,
      userId: this.context.userId ?? null,
      metadata: {
        ...metadata,
        timeSinceLastEvent: this.lastEventAt === null ? null : at - this.lastEventAt,
      },
    };
    this.lastEventAt = at;
    if (type in this.counts) this.counts[type] += 1;
    const quiet = type === 'send_success' || type === 'reconnect_attempt';
    this.log[quiet ? 'debug' : 'warn'](type, event.metadata);
    if (!this.enabled) return event;
    this.queue.push(event);
    if (this.queue.length > MAX_QUEUE) this.queue.splice(0, this.queue.length - MAX_QUEUE);
    this._schedule();
    return event;
  }

  _schedule() {
    if (this.timer !== null || !this.setTimer) return;
    this.timer = this.setTimer(() => {
      this.timer = null;
      this.flush();
    }, this.flushMs);
  }

  /** Send what is queued now (also called when the page is hidden or closed). */
  async flush({ keepalive = false } = {}) {
    if (!this.enabled || this.sending || this.queue.length === 0) return;
    const batch = this.queue.splice(0, MAX_BATCH);
    this.sending = true;
    let status = 0;
    try {
      status = await this.sendBatch(batch, { keepalive });
    } catch (err) {
      status = 0;
      this.log.debug('metrics_send_failed', { error: String(err) });
    } finally {
      this.sending = false;
    }
    if (status === 404 || status === 405) {
      // The server has no metrics route: stop sending, keep logging.
      this.enabled = false;
      this.queue = [];
      this.log.debug('metrics_endpoint_missing', { status });
      return;
    }
    if (status === 0 || status >= 500 || status === 401 || status === 429) {
      this.queue = batch.concat(this.queue).slice(-MAX_QUEUE); // try again with the next batch
    }
    if (this.queue.length) this._schedule();
  }

  stop() {
    if (this.timer !== null && this.clearTimer) this.clearTimer(this.timer);
    this.timer = null;
  }
}
