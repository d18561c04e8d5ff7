// Timeouts and bans in the page's client: the pure helpers, and a ChatClient that is timed out
// on its socket, shows it, and re-joins by itself once the timeout is over (or on an unban).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { AuthSession } from '../../src/webinar_chat/web/auth.js';
import {
  BAN_MARGIN_MS, BAN_RECHECK_MS, ChatClient, RealtimeConnection, banFrom, banRecheckDelay,
  messageActions, readConfig,
} from '../../src/webinar_chat/web/chat-client.js';
import { Monitor } from '../../src/webinar_chat/web/monitor.js';
import {
  FakeClock, fakeFetch, fakeSocketClass, memoryStorage, settle, silentLogger,
} from './fakes.mjs';

const WEBINAR = 5;
const TOPIC = `webinar:${WEBINAR}:messages`;
const ME = { id: 7, display_name: 'Ann', email: 'ann@example.test' };

describe('ban helpers', () => {
  it('reads a ban from an answer or a frame, and nothing else', () => {
    assert.deepEqual(banFrom({ code: 'timed_out', banned_until: '1970-01-01T00:00:10.000Z',
      error: 'x' }), { code: 'timed_out', until: 10000, message: 'x' });
    assert.deepEqual(banFrom({ code: 'banned', banned_until: null, message: 'y' }),
      { code: 'banned', until: null, message: 'y' });
    assert.equal(banFrom({ code: 'forbidden' }), null);
    assert.equal(banFrom(null), null);
  });

  it('re-checks just after a timeout ends, else every 30 s', () => {
    assert.equal(banRecheckDelay({ until: 10_000 }, 0), 10_000 + BAN_MARGIN_MS);
    assert.equal(banRecheckDelay({ until: 10_000_000 }, 0), BAN_RECHECK_MS);
    assert.equal(banRecheckDelay({ until: null }, 0), BAN_RECHECK_MS);
    assert.equal(banRecheckDelay({ until: 0 }, 10_000), 250);
  });

  it('offers staff time out and ban on an attendee\'s message, unban once banned', () => {
    assert.deepEqual(messageActions({ kind: 'server', staff: true, bannable: true }),
      ['hide', 'delete', 'timeout', 'ban']);
    assert.deepEqual(messageActions({ kind: 'server', staff: true, bannable: true,
      authorBanned: true }), ['hide', 'delete', 'unban']);
    assert.deepEqual(messageActions({ kind: 'server', bannable: true }), []);
  });
});

describe('a timed-out client', () => {
  it('stops, says until when, and re-joins by itself after the timeout', async () => {
    const clock = new FakeClock();
    const storage = memoryStorage();
    storage.setItem('webinar-chat:session', JSON.stringify({ access_token: 'tok-1',
      refresh_token: 'ref-1', user: ME }));
    let until = null; // the server's ban
    const { fetch, calls } = fakeFetch((method, path) => {
      if (path === `/api/webinars/${WEBINAR}`) {
        if (until !== null && until > clock.now()) {
          return { status: 403, body: { success: false, code: 'timed_out', error: 'timed out',
            banned_until: new Date(until).toISOString() } };
        }
        return { status: 200, body: { success: true, webinar: { id: WEBINAR, title: 'W',
          chat_open: true, slow_mode_seconds: 0, last_seq: 0, role: 'attendee' } } };
      }
      if (path === '/api/me') return { status: 200, body: { success: true, user: ME, webinars: [] } };
      if (path.startsWith(`/api/webinars/${WEBINAR}/messages`)) {
        return { status: 200, body: { success: true, messages: [], has_more: false, last_seq: 0 } };
      }
      return { status: 404, body: { success: false, error: 'Not found' } };
    });
    const timers = { setTimeout: clock.setTimeout.bind(clock),
      clearTimeout: clock.clearTimeout.bind(clock) };
    const auth = new AuthSession({ storage, fetchImpl: fetch, locks: null, now: () => clock.now(),
      timers });
    const Socket = fakeSocketClass();
    const env = clock.env({ WebSocket: Socket });
    const config = readConfig(null);
    const connection = new RealtimeConnection({ url: 'ws://x/realtime', auth, config, env,
      logger: silentLogger, monitor: null });
    const client = new ChatClient({ webinarId: WEBINAR, auth, connection, storage, config, env,
      logger: silentLogger, monitor: new Monitor({ logger: silentLogger, send: null }) });
    const events = [];
    client.subscribe((e) => events.push(e));
    await client.start();
    await settle();
    const ws = Socket.instances.at(-1);
    ws.open();
    ws.receive({ type: 'joined', topic: TOPIC, ref: '1', head_seq: 0 });
    assert.equal(ws.frames('join').length, 1);

    until = clock.now() + 10_000;
    ws.receive({ type: 'error', code: 'timed_out', message: 'timed out', topic: TOPIC, ref: '1',
      banned_until: new Date(until).toISOString() });
    const bans = () => events.filter((e) => e.type === 'ban');
    assert.deepEqual(bans().map((e) => e.ban && e.ban.until), [until]);
    assert.equal(client.fatal, null);
    assert.ok(client.ban);
    const beat = async (ms) => { // the server's heartbeats keep the socket alive meanwhile
      for (let t = 0; t < ms; t += 1000) {
        ws.receive({ type: 'heartbeat' });
        await clock.advance(Math.min(1000, ms - t));
      }
    };
    await beat(5_000); // still timed out: no join, no fallback polling
    assert.equal(ws.frames('join').length, 1);
    assert.equal(client.fallback, false);
    await beat(5_000 + BAN_MARGIN_MS + 10);
    await settle();
    assert.equal(Socket.instances.length, 1);
    assert.equal(client.ban, null);
    assert.deepEqual(bans().map((e) => e.ban), [bans()[0].ban, null]);
    const joins = ws.frames('join');
    assert.equal(joins.length, 2);
    assert.equal(joins[1].last_seq, 0); // resumes where it stopped: the server replays the gap
    assert.ok(calls.filter((c) => c.path === `/api/webinars/${WEBINAR}`).length >= 2);
    client.stop();
    connection.stop();
  });
});
