// The client's I/O layer (src/webinar_chat/web/chat-client.js) against scripted fakes of the
// server, the socket, the clock and storage: send pipeline, outbox, subscription, reconnect,
// fallback and gap handling, each decided in virtual time.
import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';

import { AuthSession } from '../../src/webinar_chat/web/auth.js';
import {
  ChatClient, ChatRuntime, RealtimeConnection, readConfig,
} from '../../src/webinar_chat/web/chat-client.js';
import { Monitor } from '../../src/webinar_chat/web/monitor.js';
import {
  FakeClock, fakeFetch, fakeSocketClass, memoryStorage, recordingLogger, settle, silentLogger,
} from './fakes.mjs';

const WEBINAR = 5;
const ME = { id: 7, display_name: 'Ann', email: 'ann@example.test' };
const TOPIC = `webinar:${WEBINAR}:messages`;
const config = readConfig({ sendTimeoutMs: '10000', retryBaseMs: '1000', retryCapMs: '30000',
  silenceMs: '10000', reconnectBaseMs: '500', pollRetryMs: '3000', pollJitterMs: '400' });

function row(id, extra = {}) {
  return { id, webinar_id: WEBINAR, user_id: ME.id, content: `m${id}`, hidden: false,
    client_msg_id: null, seq: id, created_at: '2026-01-01T00:00:00.000Z',
    user: { display_name: 'Ann' }, ...extra };
}

function session(storage) {
  storage.setItem('webinar-chat:session', JSON.stringify({ access_token: 'tok-1',
    refresh_token: 'ref-1', user: ME }));
}

/** A client wired to fakes. `server` answers the calls chat-client makes. */
function setup({ server = {}, storageInit = null, env = {} } = {}) {
  const clock = new FakeClock();
  const storage = memoryStorage();
  session(storage);
  if (storageInit) storageInit(storage);
  const history = server.history || [];
  const { fetch, calls } = fakeFetch((method, path, body, call) => {
    if (server.handle) {
      const answer = server.handle(method, path, body, call);
      if (answer !== undefined) return answer;
    }
    if (path === `/api/webinars/${WEBINAR}`) {
      return { status: 200, body: { success: true, webinar: { id: WEBINAR, title: 'W',
        chat_open: true, slow_mode_seconds: 0, last_seq: history.length, role: server.role
          || 'attendee' } } };
    }
    if (path === '/api/me') return { status: 200, body: { success: true, user: ME, webinars: [] } };
    if (path.startsWith(`/api/webinars/${WEBINAR}/messages`)) {
      return { status: 200, body: { success: true, messages: history, has_more: false,
        last_seq: server.lastSeq ?? history.length } };
    }
    if (path === '/api/metrics/events') return { status: 404, body: { success: false } };
    if (path === '/api/messages/create') {
      return { status: 200, body: { success: true, message: row(100, { content: body.content,
        client_msg_id: body.clientMsgId }) } };
    }
    return { status: 404, body: { success: false, error: 'Not found' } };
  });
  const timers = { setTimeout: clock.setTimeout.bind(clock),
    clearTimeout: clock.clearTimeout.bind(clock) };
  const auth = new AuthSession({ storage, fetchImpl: fetch, locks: null, now: () => clock.now(),
    timers });
  const Socket = fakeSocketClass();
  const fullEnv = clock.env({ WebSocket: Socket, ...env });
  const logger = recordingLogger();
  const monitor = new Monitor({ logger: silentLogger, send: null });
  const tracked = [];
  monitor.track = (type, metadata) => tracked.push({ type, metadata });
  const connection = new RealtimeConnection({ url: 'ws://x/realtime', auth, config, env: fullEnv,
    logger: silentLogger, monitor });
  auth.onChange((token) => connection.tokenChanged(token));
  const client = new ChatClient({ webinarId: WEBINAR, auth, connection, storage, config,
    env: fullEnv, logger, monitor });
  const events = [];
  client.subscribe((e) => events.push(e));
  const creates = () => calls.filter((c) => c.path === '/api/messages/create');
  return { clock, storage, calls, creates, client, connection, Socket, tracked, events, auth,
    logger };
}

async function started(ctx, { live = true } = {}) {
  await ctx.client.start();
  await settle();
  const ws = ctx.Socket.instances.at(-1);
  if (live) {
    ws.open();
    ws.receive({ type: 'hello', heartbeat_interval: 5 });
    ws.receive({ type: 'joined', topic: TOPIC, ref: '1', head_seq: 0 });
  }
  return ws;
}

const localState = (client, cmid) => client.timeline.optimistic.get(cmid)?.state;

describe('sending', () => {
  it('shows the message at once and replaces it with the POST answer', async () => {
    const ctx = setup();
    await started(ctx);
    const r = ctx.client.send('  hello  ');
    assert.equal(r.ok, true);
    assert.deepEqual(ctx.client.timeline.items().map((i) => i.key), [`temp-${r.clientMsgId}`]);
    assert.equal(localState(ctx.client, r.clientMsgId), 'sending');
    await settle();
    assert.deepEqual(ctx.client.timeline.items().map((i) => i.key), ['100']);
    assert.equal(ctx.creates()[0].body.content, 'hello');
    assert.equal(ctx.creates()[0].body.clientMsgId, r.clientMsgId);
    assert.equal(ctx.client.outbox.size, 0);
    assert.equal(ctx.storage.getItem(`webinar-chat:outbox:v1:7:${WEBINAR}`), null);
    assert.deepEqual(ctx.tracked.filter((t) => t.type === 'send_success').length, 1);
  });

  it('times out at 10 s: indicator off, re-sent with the same id, 409 reconciles', async () => {
    let n = 0;
    const ctx = setup({ server: { handle: (m, path, body) => {
      if (path !== '/api/messages/create') return undefined;
      n += 1;
      if (n === 1) return 'hang';
      return { status: 409, body: { success: false, error: 'Duplicate message detected',
        code: 'duplicate', message: row(41, { content: body.content, client_msg_id: body.clientMsgId }) } };
    } } });
    await started(ctx);
    const { clientMsgId } = ctx.client.send('slow');
    await ctx.clock.advance(9999);
    assert.equal(localState(ctx.client, clientMsgId), 'sending');
    await ctx.clock.advance(1);
    assert.equal(localState(ctx.client, clientMsgId), 'pending');
    assert.equal(ctx.creates()[0].aborted, true);
    assert.ok(ctx.tracked.some((t) => t.type === 'send_timeout'));
    await ctx.clock.advance(999);
    assert.equal(ctx.creates().length, 1);
    await ctx.clock.advance(1); // retry after 1 s
    assert.equal(ctx.creates().length, 2);
    assert.equal(ctx.creates()[1].body.clientMsgId, clientMsgId);
    assert.deepEqual(ctx.client.timeline.items().map((i) => i.key), ['41']);
    assert.equal(ctx.client.outbox.size, 0);
  });

  it('backs off between re-sends and marks the message failed after the last attempt', async () => {
    const ctx = setup({ server: { handle: (m, path) => (path === '/api/messages/create'
      ? { status: 503, body: { success: false, error: 'Unavailable' } } : undefined) } });
    await started(ctx);
    const { clientMsgId } = ctx.client.send('doomed');
    const times = [ctx.clock.now()];
    for (let i = 0; i < 2000 && ctx.client.outbox.get(clientMsgId).state !== 'failed'; i += 1) {
      const before = ctx.creates().length;
      await ctx.clock.advance(100);
      if (ctx.creates().length > before) times.push(ctx.clock.now());
    }
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    assert.deepEqual(gaps, [1000, 2000, 4000, 8000, 16000, 30000, 30000].slice(0, gaps.length));
    assert.equal(ctx.creates().length, config.maxSendAttempts);
    assert.equal(new Set(ctx.creates().map((c) => c.body.clientMsgId)).size, 1);
    assert.equal(localState(ctx.client, clientMsgId), 'failed');
    // Retry starts over, with the same id.
    ctx.client.retry(clientMsgId);
    await settle();
    assert.equal(ctx.creates().length, config.maxSendAttempts + 1);
    assert.equal(ctx.creates().at(-1).body.clientMsgId, clientMsgId);
  });

  it('a 429 rate_limited is re-sent with the same id after Retry-After, not given back',
    async () => {
      let n = 0;
      const ctx = setup({ server: { handle: (m, path, body) => {
        if (path !== '/api/messages/create') return undefined;
        n += 1;
        if (n === 1) {
          return { status: 429, headers: { 'retry-after': '3' }, body: { success: false,
            error: 'Too many messages; retry in 3 s', code: 'rate_limited', retry_after: 3 } };
        }
        return { status: 200, body: { success: true, message: row(50, { content: body.content,
          client_msg_id: body.clientMsgId }) } };
      } } });
      await started(ctx);
      const { clientMsgId } = ctx.client.send('quick');
      await settle();
      assert.equal(localState(ctx.client, clientMsgId), 'pending');
      assert.equal(ctx.events.find((e) => e.type === 'rejected'), undefined);
      assert.equal(ctx.client.outbox.size, 1);
      ctx.client.flush(); // back online, socket healthy …: the Retry-After still holds
      await ctx.clock.advance(2999);
      assert.equal(ctx.creates().length, 1);
      await ctx.clock.advance(1);
      assert.equal(ctx.creates().length, 2);
      assert.equal(ctx.creates()[1].body.clientMsgId, clientMsgId);
      assert.deepEqual(ctx.client.timeline.items().map((i) => i.key), ['50']);
      assert.equal(ctx.client.outbox.size, 0);
    });

  it('rate-limited re-sends do not use up the attempts for an unreachable server', async () => {
    let n = 0;
    const ctx = setup({ server: { handle: (m, path, body) => {
      if (path !== '/api/messages/create') return undefined;
      n += 1;
      if (n <= config.maxSendAttempts + 4) {
        return { status: 429, headers: { 'retry-after': '1' }, body: { success: false,
          error: 'Too many messages', code: 'rate_limited', retry_after: 1 } };
      }
      return { status: 200, body: { success: true, message: row(60, { content: body.content,
        client_msg_id: body.clientMsgId }) } };
    } } });
    await started(ctx);
    const { clientMsgId } = ctx.client.send('patient');
    for (let i = 0; i < config.maxSendAttempts + 5; i += 1) await ctx.clock.advance(1000);
    assert.equal(ctx.creates().length, config.maxSendAttempts + 5);
    assert.equal(new Set(ctx.creates().map((c) => c.body.clientMsgId)).size, 1);
    assert.equal(ctx.client.outbox.size, 0);
    assert.deepEqual(ctx.client.timeline.items().map((i) => i.key), ['60']);
    assert.equal(ctx.client.outbox.get(clientMsgId), undefined);
  });

  it('a 4xx removes the message and gives the text back', async () => {
    const ctx = setup({ server: { handle: (m, path) => (path === '/api/messages/create'
      ? { status: 403, body: { success: false, error: 'The chat is closed', code: 'forbidden' } }
      : undefined) } });
    await started(ctx);
    ctx.client.send('let me in');
    await settle();
    assert.equal(ctx.client.timeline.items().length, 0);
    const rejected = ctx.events.find((e) => e.type === 'rejected');
    assert.equal(rejected.content, 'let me in');
    assert.equal(rejected.error, 'The chat is closed');
    assert.equal(ctx.client.outbox.size, 0);
  });

  it('a realtime INSERT with the client_msg_id resolves a pending message', async () => {
    const ctx = setup({ server: { handle: (m, path) => (path === '/api/messages/create'
      ? 'network' : undefined) } });
    const ws = await started(ctx);
    const { clientMsgId } = ctx.client.send('via socket');
    await settle();
    assert.equal(localState(ctx.client, clientMsgId), 'pending');
    ws.receive({ type: 'changes', topic: TOPIC, events: [{ seq: 1, type: 'INSERT',
      new: row(9, { content: 'via socket', client_msg_id: clientMsgId }), old: null }] });
    assert.deepEqual(ctx.client.timeline.items().map((i) => i.key), ['9']);
    assert.equal(ctx.client.outbox.size, 0);
    await ctx.clock.advance(60000);
    assert.equal(ctx.creates().length, 1); // no more re-sends
  });

  it('bounces: the same text twice within the cooldown is one message', async () => {
    const ctx = setup();
    await started(ctx);
    assert.equal(ctx.client.send('twice').ok, true);
    assert.deepEqual(ctx.client.send('twice'), { ok: false, reason: 'cooldown' });
    assert.equal(ctx.client.send('something else').ok, true);
    await ctx.clock.advance(1000);
    assert.equal(ctx.client.send('twice').ok, true);
    assert.equal(ctx.client.send('   ').reason, 'empty');
    assert.equal(ctx.client.send('x'.repeat(2001)).reason, 'too_long');
  });

  it('waits while offline and sends at once when back', async () => {
    let online = false;
    const ctx = setup({ env: { isOnline: () => online } });
    await started(ctx, { live: false });
    assert.equal(ctx.Socket.instances.length, 0); // no socket attempts while offline either
    const { clientMsgId } = ctx.client.send('offline');
    await ctx.clock.advance(60000);
    assert.equal(ctx.creates().length, 0);
    assert.equal(localState(ctx.client, clientMsgId), 'pending');
    assert.equal(ctx.client.status, 'offline');
    online = true;
    ctx.client.resume();
    await settle();
    assert.equal(ctx.creates().length, 1);
    assert.equal(ctx.client.outbox.size, 0);
  });
});

describe('outbox', () => {
  const saved = '0b8f3c2a-1d2e-4f50-8a6b-7c8d9e0f1a2b';
  const stored = '1c9f4d3b-2e3f-4a61-9b7c-8d9e0f1a2b3c';
  const outbox = (s) => s.setItem(`webinar-chat:outbox:v1:7:${WEBINAR}`, JSON.stringify({
    v: 1, entries: [
      { client_msg_id: saved, content: 'from before the reload', attempts: 1, state: 'pending' },
      { client_msg_id: stored, content: 'already stored', attempts: 1, state: 'pending' },
    ] }));

  it('re-sends what the last page left unsent, once, and forgets what was stored', async () => {
    const ctx = setup({ storageInit: outbox, server: {
      history: [row(3, { content: 'already stored', client_msg_id: stored })] } });
    await started(ctx);
    await settle();
    assert.deepEqual(ctx.creates().map((c) => c.body.clientMsgId), [saved]);
    assert.equal(ctx.storage.getItem(`webinar-chat:outbox:v1:7:${WEBINAR}`), null);
    await ctx.clock.advance(120000);
    assert.equal(ctx.creates().length, 1);
  });
});

describe('receiving', () => {
  let ctx;
  let ws;
  beforeEach(async () => {
    ctx = setup({ server: { history: [row(1), row(2)], handle: (m, path) => {
      if (path.includes('/changes?after_seq=2&limit')) {
        return { status: 200, body: { success: true, changes: [
          { seq: 3, type: 'INSERT', new: row(3), old: null }], last_seq: 3, has_more: false } };
      }
      return undefined;
    } } });
    ws = await started(ctx);
  });

  it('joins with the last_seq of the history it loaded', () => {
    assert.deepEqual(ws.frames('join'), [{ type: 'join', topic: TOPIC, ref: '1', last_seq: 2 }]);
    assert.deepEqual(ws.sent[0], { type: 'auth', token: 'tok-1' });
  });

  it('fetches the missing range when a seq is skipped', async () => {
    ws.receive({ type: 'changes', topic: TOPIC, events: [
      { seq: 4, type: 'INSERT', new: row(4), old: null }] });
    assert.equal(ctx.client.lastSeq, 2); // held until the gap is filled
    await settle();
    assert.ok(ctx.calls.some((c) => c.path === `/api/webinars/${WEBINAR}/changes?after_seq=2&limit=500`));
    assert.equal(ctx.client.lastSeq, 4);
    assert.deepEqual(ctx.client.timeline.items().map((i) => i.key), ['1', '2', '3', '4']);
  });

  it('drops duplicates and warns about UPDATE/DELETE without an id', () => {
    const ev = { seq: 3, type: 'INSERT', new: row(3), old: null };
    ws.receive({ type: 'changes', topic: TOPIC, events: [ev, ev] });
    ws.receive({ type: 'changes', topic: TOPIC, events: [ev,
      { seq: 4, type: 'UPDATE', new: { content: 'no id' }, old: null },
      { seq: 5, type: 'DELETE', new: null, old: null }] });
    assert.deepEqual(ctx.client.timeline.items().map((i) => i.key), ['1', '2', '3']);
    assert.equal(ctx.client.lastSeq, 5);
    assert.equal(ctx.logger.lines.filter((l) => l.event === 'change_ignored').length, 2);
  });
});

describe('connection', () => {
  it('one join per topic however many listeners; the last one out leaves and closes', () => {
    const clock = new FakeClock();
    const Socket = fakeSocketClass();
    const conn = new RealtimeConnection({ url: 'ws://x', auth: { accessToken: 't' }, config,
      env: clock.env({ WebSocket: Socket }), logger: silentLogger });
    const l1 = { lastSeq: () => 4, onEvents: () => {} };
    const got = [];
    const l2 = { lastSeq: () => 9, onEvents: (e) => got.push(e) };
    const off1 = conn.subscribe(TOPIC, l1);
    const off2 = conn.subscribe(TOPIC, l2);
    assert.equal(Socket.instances.length, 1);
    const ws = Socket.instances[0];
    ws.open();
    assert.deepEqual(ws.frames('join'), [{ type: 'join', topic: TOPIC, ref: '1', last_seq: 4 }]);
    ws.receive({ type: 'changes', topic: TOPIC, events: [{ seq: 5 }] });
    assert.equal(got.length, 1);
    off1();
    assert.deepEqual(ws.frames('leave'), []);
    off2();
    assert.deepEqual(ws.frames('leave'), [{ type: 'leave', topic: TOPIC }]);
    assert.deepEqual(ws.closedWith, { code: 1000, reason: 'client closing' });
    assert.equal(clock.pending(), 0); // heartbeat, watchdog and reconnect timers are gone
  });

  it('reconnects with 500 ms × 2^(n−1) up to 15 s, resets on success, sends the token each time',
    async () => {
      const clock = new FakeClock();
      const Socket = fakeSocketClass();
      const auth = { accessToken: 'a' };
      const conn = new RealtimeConnection({ url: 'ws://x', auth, config,
        env: clock.env({ WebSocket: Socket }), logger: silentLogger });
      conn.subscribe(TOPIC, { lastSeq: () => 0, onEvents: () => {} });
      const delays = [];
      for (let i = 0; i < 7; i += 1) {
        const ws = Socket.instances.at(-1);
        ws.serverClose();
        const t0 = clock.now();
        while (Socket.instances.at(-1) === ws) await clock.advance(50);
        delays.push(clock.now() - t0);
      }
      assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 15000, 15000]);
      auth.accessToken = 'b';
      let ws = Socket.instances.at(-1);
      ws.open();
      assert.deepEqual(ws.sent[0], { type: 'auth', token: 'b' });
      ws.receive({ type: 'joined', topic: TOPIC });
      assert.equal(conn.snapshot().failures, 0);
      ws.serverClose();
      const t0 = clock.now();
      while (Socket.instances.at(-1) === ws) await clock.advance(50);
      assert.equal(clock.now() - t0, 500);
      ws = Socket.instances.at(-1);
      ws.open();
      assert.deepEqual(ws.sent[0], { type: 'auth', token: 'b' });
      conn.stop();
    });

  it('declares a socket without frames for 10 s dead and replaces it', async () => {
    const clock = new FakeClock();
    const Socket = fakeSocketClass();
    const conn = new RealtimeConnection({ url: 'ws://x', auth: { accessToken: 't' }, config,
      env: clock.env({ WebSocket: Socket }), logger: silentLogger });
    conn.subscribe(TOPIC, { lastSeq: () => 0, onEvents: () => {} });
    const ws = Socket.instances[0];
    ws.open();
    ws.receive({ type: 'joined', topic: TOPIC });
    await clock.advance(9000);
    ws.receive({ type: 'heartbeat' });
    await clock.advance(9000);
    assert.equal(ws.closedWith, null);
    await clock.advance(2000);
    assert.equal(ws.closedWith.code, 4001);
    await clock.advance(600);
    assert.equal(Socket.instances.length, 2);
    assert.ok(ws.frames('heartbeat').length >= 3); // the client's own heartbeats went out
    conn.stop();
  });

  it('pushes a refreshed token on the open socket; an expired one is refreshed', async () => {
    const ctx = setup({ server: { handle: (m, path) => (path === '/api/auth/refresh'
      ? { status: 200, body: { success: true, access_token: 'tok-2', refresh_token: 'ref-2',
        expires_in: 900, user: ME } } : undefined) } });
    const ws = await started(ctx);
    ws.receive({ type: 'error', code: 'token_expired', message: 'Access token expired' });
    assert.equal(ctx.connection.live, false);
    await settle();
    const auths = ws.frames('auth').map((f) => f.token);
    assert.deepEqual(auths, ['tok-1', 'tok-2']);
    assert.equal(ws.frames('join').length, 2); // re-joined with its last_seq
    assert.equal(Socket_count(ctx), 1); // on the same socket
    ctx.client.stop();
    ctx.auth.stop();
  });
});

function Socket_count(ctx) {
  return ctx.Socket.instances.length;
}

describe('fallback', () => {
  it('long-polls after 3 failed sockets, waits 3 s ± 400 ms after a failed poll, and stops '
    + 'when the socket is healthy', async () => {
    const polls = [];
    let failPolls = 1;
    const ctx = setup({ server: { handle: (m, path) => {
      if (!path.includes('/changes?after_seq=') || !path.includes('wait=')) return undefined;
      polls.push(path);
      if (failPolls > 0) {
        failPolls -= 1;
        return { status: 502, body: null };
      }
      if (path.includes('wait=0')) { // the probe that asks whether the server answers at all
        return { status: 200, body: { success: true, changes: [], last_seq: 0, has_more: false } };
      }
      return new Promise(() => {}); // a long-poll waiting for a change
    } } });
    await started(ctx, { live: false });
    Socket_last(ctx).serverClose();
    await ctx.clock.advance(500); // reconnect 1 after 500 ms
    Socket_last(ctx).serverClose();
    await ctx.clock.advance(1000); // reconnect 2 after 1 s
    assert.equal(ctx.client.fallback, false);
    assert.equal(ctx.client.status, 'connecting'); // never joined yet: not "reconnecting"
    Socket_last(ctx).serverClose(); // third consecutive failure
    await settle();
    assert.equal(ctx.client.fallback, true);
    // Not "live (backup connection)" before the backup connection answered once.
    assert.equal(ctx.client.status, 'connecting');
    assert.equal(ctx.tracked.filter((t) => t.type === 'fallback_activated').length, 1);
    assert.equal(polls.length, 1); // the first poll (a probe: it does not wait) failed …
    assert.ok(polls[0].endsWith('wait=0'), polls[0]);
    await ctx.clock.advance(2999);
    assert.equal(polls.length, 1);
    await ctx.clock.advance(1); // … the next one 3 s later (random = 0.5: no jitter)
    await settle();
    assert.equal(ctx.client.status, 'fallback'); // answered: live over the backup connection
    assert.equal(polls.length, 3); // the probe, then a long-poll that waits
    assert.ok(!polls[2].endsWith('wait=0'), polls[2]);
    const ws = Socket_last(ctx);
    ws.open();
    ws.receive({ type: 'joined', topic: TOPIC });
    assert.equal(ctx.client.fallback, false);
    assert.equal(ctx.client.status, 'live');
    ctx.client.stop();
  });

  it('pauses while the tab is hidden and polls at once when it is visible again', async () => {
    let visible = true;
    const polls = [];
    const ctx = setup({ env: { isVisible: () => visible }, server: { handle: (m, path) => {
      if (!path.includes('wait=')) return undefined;
      polls.push(path);
      return { status: 200, body: { success: true, changes: [], last_seq: 0, has_more: false } };
    } } });
    await started(ctx, { live: false });
    visible = false;
    await ctx.clock.advance(10001); // silence → fallback, but hidden: no poll
    assert.equal(ctx.client.fallback, true);
    assert.equal(polls.length, 0);
    visible = true;
    ctx.client.resume();
    await settle();
    assert.equal(polls.length, 2); // the probe (answered), then the first long-poll
    // An empty answer that came back at once is not a long-poll: no hot loop, 3 s pause.
    await ctx.clock.advance(2999);
    assert.equal(polls.length, 2);
    await ctx.clock.advance(1);
    assert.equal(polls.length, 3);
    ctx.client.stop();
  });
});

function Socket_last(ctx) {
  return ctx.Socket.instances.at(-1);
}

describe('monitor', () => {
  it('batches events and turns itself off when the route does not exist', async () => {
    const clock = new FakeClock();
    const batches = [];
    const m = new Monitor({ logger: silentLogger, flushMs: 5000, now: () => clock.now(),
      setTimer: clock.setTimeout.bind(clock), clearTimer: clock.clearTimeout.bind(clock),
      send: async (events) => { batches.push(events); return 404; } });
    m.setContext({ webinarId: 5, userId: 7 });
    m.track('reconnect_attempt', { reconnectTries: 1 });
    await clock.advance(100);
    m.track('fallback_activated', { reason: 'silence' });
    await clock.advance(5000);
    assert.equal(batches.length, 1);
    assert.deepEqual(batches[0].map((e) => e.type), ['reconnect_attempt', 'fallback_activated']);
    assert.deepEqual(batches[0][1].metadata, { reason: 'silence', timeSinceLastEvent: 100 });
    assert.equal(batches[0][1].webinarId, 5);
    assert.equal(m.enabled, false);
    m.track('send_error', { errorMessage: 'x' });
    await clock.advance(60000);
    assert.equal(batches.length, 1);
    assert.equal(m.counts.send_error, 1);
  });
});

describe('runtime', () => {
  it('a chat mounted twice is one client and one subscription; teardown leaves and closes',
    async () => {
      const ctx = setup();
      const runtime = new ChatRuntime({ auth: ctx.auth, monitor: null, logger: silentLogger,
        config, env: ctx.clock.env({ WebSocket: ctx.Socket }), storage: ctx.storage,
        realtimeUrl: 'ws://x/realtime' });
      const a = runtime.acquire(WEBINAR);
      const b = runtime.acquire(WEBINAR);
      assert.equal(a, b);
      await settle();
      assert.equal(ctx.Socket.instances.length, 1);
      const ws = ctx.Socket.instances[0];
      ws.open();
      assert.equal(ws.frames('join').length, 1);
      assert.equal(ctx.calls.filter((c) => c.path === `/api/webinars/${WEBINAR}`).length, 1);
      runtime.release(WEBINAR);
      assert.equal(ws.frames('leave').length, 0);
      runtime.release(WEBINAR);
      assert.deepEqual(ws.frames('leave'), [{ type: 'leave', topic: TOPIC }]);
      assert.equal(ws.closedWith.code, 1000);
      runtime.close();
      ctx.auth.stop();
      assert.equal(ctx.clock.pending(), 0);
    });
});

describe('presence', () => {
  it('takes the count from presence frames of its topic only, and says so once per change',
    async () => {
      const ctx = setup();
      const ws = await started(ctx);
      assert.equal(ctx.client.presence, null);
      ws.receive({ type: 'presence', topic: TOPIC, count: 3 });
      ws.receive({ type: 'presence', topic: TOPIC, count: 3 });
      ws.receive({ type: 'presence', topic: 'webinar:99:messages', count: 40 });
      ws.receive({ type: 'presence', topic: TOPIC, count: 'many' });
      assert.equal(ctx.client.presence, 3);
      assert.deepEqual(ctx.events.filter((e) => e.type === 'presence'),
        [{ type: 'presence', count: 3 }]);
      ctx.client.stop();
    });

  it('reads the endpoint every 10 s in the fallback, and never while the socket is live',
    async () => {
      const reads = [];
      const ctx = setup({ server: { handle: (m, path) => {
        if (path === `/api/webinars/${WEBINAR}/presence`) {
          reads.push(path);
          return { status: 200, body: { success: true, count: 4 + reads.length } };
        }
        if (path.includes('wait=')) return new Promise(() => {});
        return undefined;
      } } });
      await started(ctx);
      await ctx.clock.advance(9000); // live (heartbeats keep it so): no reads
      assert.equal(reads.length, 0);
      Socket_last(ctx).serverClose();
      for (const delay of [500, 1000]) {
        await ctx.clock.advance(delay);
        Socket_last(ctx).serverClose();
      }
      await settle();
      assert.equal(ctx.client.fallback, true);
      const before = reads.length; // 0 or 1: the 10 s timer may have run since the fallback began
      await ctx.clock.advance(10_000);
      assert.equal(reads.length, before + 1);
      assert.equal(ctx.client.presence, 4 + reads.length);
      await ctx.clock.advance(10_000);
      assert.equal(reads.length, before + 2);
      assert.equal(ctx.client.presence, 4 + reads.length);
      ctx.client.stop();
      await ctx.clock.advance(30_000);
      assert.equal(reads.length, before + 2);
    });
});
