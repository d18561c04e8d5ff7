// Pure logic of the browser client (src/webinar_chat/web/chat-core.js): node --test tests/js/
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  DEFAULTS, GROUP_GAP_MS, Timeline, applyChange, backoffDelay, classifySendResult,
  connectionStatus, dayLabel, localDayKey, localStateLabel, messageActions, newClientMsgId,
  parseOutbox, pollAllowed, pollRetryDelay, readConfig, reconnectDelay, retryDelay, safeNextPath,
  sequenceEvents, serializeOutbox, shouldUseFallback, tempId, timelineLayout, topicFor,
} from '../../src/webinar_chat/web/chat-core.js';

const msg = (id, extra = {}) => ({
  id, webinar_id: 1, user_id: 7, content: `m${id}`, created_at: '2026-01-01T00:00:00.000Z',
  hidden: false, client_msg_id: null, seq: id, user: { display_name: 'Ann' }, ...extra,
});
const ids = (timeline) => timeline.items().map((i) => i.key);

describe('backoff', () => {
  it('reconnects after 500 ms × 2^(n−1), capped at 15 s', () => {
    const mid = () => 0.5; // jitter factor exactly 1
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 10].map((n) => reconnectDelay(n, DEFAULTS, mid)),
      [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
  });

  it('jitters by ±20 % and never exceeds the cap', () => {
    assert.equal(reconnectDelay(1, DEFAULTS, () => 0), 400);
    assert.equal(reconnectDelay(1, DEFAULTS, () => 0.999999), 600);
    for (let n = 1; n < 40; n += 1) {
      for (const r of [0, 0.3, 0.999]) {
        const d = reconnectDelay(n, DEFAULTS, () => r);
        assert.ok(d <= 15000 && d >= 400, `${n}: ${d}`);
      }
    }
  });

  it('re-sends back off from the retry base and survive huge attempt counts', () => {
    assert.equal(retryDelay(1, DEFAULTS, () => 0.5), 1000);
    assert.equal(retryDelay(3, DEFAULTS, () => 0.5), 4000);
    assert.equal(backoffDelay(5000, 100, 800, () => 0.5), 800);
    assert.equal(backoffDelay(0, 100, 800, () => 0.5), 100);
  });

  it('waits 3 s ± 400 ms between failed polls', () => {
    assert.equal(pollRetryDelay(DEFAULTS, () => 0), 2600);
    assert.equal(pollRetryDelay(DEFAULTS, () => 0.5), 3000);
    assert.equal(pollRetryDelay(DEFAULTS, () => 1), 3400);
  });
});

describe('fallback decisions and status', () => {
  it('switches to HTTP after 3 consecutive failures or 10 s of silence', () => {
    assert.equal(shouldUseFallback({ socketLive: false, failures: 2, silentMs: 9999 }), false);
    assert.equal(shouldUseFallback({ socketLive: false, failures: 3, silentMs: 0 }), true);
    assert.equal(shouldUseFallback({ socketLive: false, failures: 0, silentMs: 10000 }), true);
  });

  it('never while the socket is live', () => {
    assert.equal(shouldUseFallback({ socketLive: true, failures: 9, silentMs: 1e9 }), false);
  });

  it('polls only in fallback, visible and online', () => {
    assert.equal(pollAllowed({ fallback: true, visible: true, online: true }), true);
    assert.equal(pollAllowed({ fallback: true, visible: false, online: true }), false);
    assert.equal(pollAllowed({ fallback: true, visible: true, online: false }), false);
    assert.equal(pollAllowed({ fallback: false, visible: true, online: true }), false);
  });

  it('shows live / reconnecting / fallback / offline', () => {
    const before = { connectedBefore: true };
    assert.equal(connectionStatus({ online: true, socketLive: true, fallback: false }), 'live');
    assert.equal(connectionStatus({ online: true, socketLive: false, fallback: false, ...before }),
      'reconnecting');
    assert.equal(connectionStatus({ online: true, socketLive: false, fallback: true,
      pollLive: true }), 'fallback');
    // Long-polling that gets no answer either (the server is down) is not live.
    assert.equal(connectionStatus({ online: true, socketLive: false, fallback: true, ...before }),
      'reconnecting');
    assert.equal(connectionStatus({ online: true, socketLive: false, fallback: true }),
      'connecting');
    assert.equal(connectionStatus({ online: false, socketLive: true, fallback: true }), 'offline');
  });

  it('says connecting, not reconnecting, until a first connection was made', () => {
    assert.equal(connectionStatus({ online: true, socketLive: false, fallback: false }),
      'connecting');
    assert.equal(connectionStatus({ online: true, socketLive: false, fallback: false,
      connectedBefore: false }), 'connecting');
    assert.equal(connectionStatus({ online: false, socketLive: false, fallback: false }),
      'offline');
  });
});

describe('send results', () => {
  it('200 and 409 both carry the stored row', () => {
    assert.deepEqual(classifySendResult(200, { success: true, message: msg(1) }),
      { kind: 'stored', message: msg(1), duplicate: false });
    assert.deepEqual(classifySendResult(409, { success: false, error: 'Duplicate message detected',
      message: msg(1) }), { kind: 'stored', message: msg(1), duplicate: true });
  });

  it('no answer, 5xx, 408 and unusable answers are retried', () => {
    for (const [status, body] of [[0, null], [500, null], [502, { error: 'x' }], [408, null],
      [409, { success: false }], [200, { success: true }]]) {
      assert.equal(classifySendResult(status, body).kind, 'retry', String(status));
    }
  });

  it('401 asks for a new token; other 4xx are rejections with the server’s words', () => {
    assert.equal(classifySendResult(401, { error: 'expired' }).kind, 'auth');
    const r = classifySendResult(403, { success: false, error: 'The chat is closed', code: 'closed' });
    assert.deepEqual(r, { kind: 'rejected', error: 'The chat is closed', code: 'closed',
      retryAfterS: null });
    const slow = classifySendResult(429, { error: 'Slow', code: 'slow_mode', retry_after: 4.2 });
    assert.equal(slow.kind, 'rejected');
    assert.equal(slow.retryAfterS, 5);
    assert.match(classifySendResult(400, null).error, /HTTP 400/);
  });

  it('a 429 other than slow mode is re-sent after its Retry-After', () => {
    const body = { success: false, error: 'Too many messages; retry in 3 s', code: 'rate_limited',
      retry_after: 3 };
    assert.deepEqual(classifySendResult(429, body, '3'),
      { kind: 'retry', error: body.error, retryAfterS: 3 });
    assert.equal(classifySendResult(429, body, '7').retryAfterS, 7); // the header wins
    assert.equal(classifySendResult(429, body, null).retryAfterS, 3);
    assert.equal(classifySendResult(429, body, 'Wed, 21 Oct 2026 07:28:00 GMT').retryAfterS, 3);
    // A proxy's own 429 (HTML, no code, no header): retried, after at least a second.
    assert.deepEqual(classifySendResult(429, null, null),
      { kind: 'retry', error: 'Too many messages', retryAfterS: 1 });
    assert.equal(classifySendResult(429, body, '0').retryAfterS, 1);
  });
});

describe('sequencing change events', () => {
  it('applies contiguous events in seq order and drops repeats', () => {
    const r = sequenceEvents(3, [{ seq: 5 }, { seq: 4 }, { seq: 3 }, { seq: 4 }, { seq: 2 }]);
    assert.deepEqual(r.ready.map((e) => e.seq), [4, 5]);
    assert.equal(r.gap, false);
    assert.equal(r.stale, 3);
  });

  it('reports a gap and holds what comes after it', () => {
    const r = sequenceEvents(3, [{ seq: 4 }, { seq: 6 }, { seq: 7 }]);
    assert.deepEqual(r.ready.map((e) => e.seq), [4]);
    assert.deepEqual(r.held.map((e) => e.seq), [6, 7]);
    assert.equal(r.gap, true);
  });

  it('ignores events without a numeric seq', () => {
    const r = sequenceEvents(0, [{ seq: '1' }, null, { seq: 1 }]);
    assert.deepEqual(r.ready.map((e) => e.seq), [1]);
  });
});

describe('timeline', () => {
  it('dedupes by id and keeps id order whatever the arrival order', () => {
    const t = new Timeline();
    for (const id of [3, 1, 2, 3, 1]) t.upsert(msg(id));
    assert.deepEqual(ids(t), ['1', '2', '3']);
  });

  it('keeps unsent messages after the stored ones, in writing order', () => {
    const t = new Timeline({ userId: 7 });
    t.addOptimistic({ client_msg_id: 'b', content: 'second' });
    t.addOptimistic({ client_msg_id: 'a', content: 'first?' });
    t.upsert(msg(10));
    assert.deepEqual(ids(t), ['10', tempId('b'), tempId('a')]);
    assert.equal(tempId('b'), 'temp-b');
  });

  it('replaces an optimistic message by client_msg_id only', () => {
    const t = new Timeline({ userId: 7 });
    t.addOptimistic({ client_msg_id: 'c1', content: 'hello' });
    // Same author and content but another id: a different message, not a match.
    const other = t.upsert(msg(1, { content: 'hello', client_msg_id: 'c2' }));
    assert.equal(other.resolved, null);
    const mine = t.upsert(msg(2, { content: 'hello', client_msg_id: 'c1' }));
    assert.equal(mine.resolved, 'c1');
    assert.deepEqual(ids(t), ['1', '2']);
  });

  it('does not let another user resolve my optimistic message', () => {
    const t = new Timeline({ userId: 7 });
    t.addOptimistic({ client_msg_id: 'c1', content: 'x' });
    assert.equal(t.upsert(msg(1, { user_id: 8, client_msg_id: 'c1' })).resolved, null);
    assert.equal(t.optimistic.size, 1);
  });

  it('matches legacy rows (no client_msg_id) by author and content', () => {
    const t = new Timeline({ userId: 7 });
    t.addOptimistic({ client_msg_id: null, content: 'old client' });
    assert.equal(t.upsert(msg(1, { content: 'something else' })).resolved, null);
    assert.match(t.upsert(msg(2, { content: 'old client' })).resolved, /^legacy-/);
    assert.deepEqual(ids(t), ['1', '2']);
  });

  it('never lets an older state overwrite a newer one', () => {
    const t = new Timeline({ staff: true });
    t.upsert(msg(1, { seq: 5, hidden: true }));
    t.upsert(msg(1, { seq: 1, hidden: false }));
    assert.equal(t.get(1).hidden, true);
  });

  it('a message seen deleted stays deleted (a late answer cannot revive it)', () => {
    const t = new Timeline();
    t.upsert(msg(1));
    applyChange(t, { seq: 2, type: 'DELETE', new: null, old: { id: 1 } });
    assert.equal(t.upsert(msg(1)).changed, false);
    assert.deepEqual(ids(t), []);
  });

  it('hides hidden messages from attendees and keeps them for staff', () => {
    const attendee = new Timeline();
    const staff = new Timeline({ staff: true });
    for (const t of [attendee, staff]) {
      t.upsert(msg(1));
      t.upsert({ id: 1, webinar_id: 1, hidden: true, seq: 9 });
    }
    assert.deepEqual(ids(attendee), []);
    assert.deepEqual(ids(staff), ['1']);
    assert.equal(staff.get(1).hidden, true);
    assert.equal(staff.get(1).content, 'm1');
  });
});

describe('applying change events', () => {
  it('INSERT, UPDATE and DELETE by id', () => {
    const t = new Timeline();
    applyChange(t, { seq: 1, type: 'INSERT', new: msg(1), old: null });
    applyChange(t, { seq: 2, type: 'INSERT', new: msg(2), old: null });
    applyChange(t, { seq: 3, type: 'UPDATE', new: msg(1, { content: 'edited', seq: 3 }),
      old: { id: 1 } });
    assert.equal(t.get(1).content, 'edited');
    applyChange(t, { seq: 4, type: 'DELETE', new: null, old: { id: 2 } });
    assert.deepEqual(ids(t), ['1']);
  });

  it('warns about and ignores UPDATE/DELETE without an id', () => {
    const t = new Timeline();
    t.upsert(msg(1));
    const upd = applyChange(t, { seq: 2, type: 'UPDATE', new: { content: 'x' }, old: null });
    const del = applyChange(t, { seq: 3, type: 'DELETE', new: null, old: {} });
    assert.equal(upd.applied, false);
    assert.match(upd.warning, /without a message id/);
    assert.match(del.warning, /without a message id/);
    assert.deepEqual(ids(t), ['1']);
    assert.match(applyChange(t, { seq: 4, type: 'TRUNCATE' }).warning, /unknown change type/);
  });

  it('an UPDATE that hides removes the message for attendees; unhide brings it back', () => {
    const t = new Timeline();
    t.upsert(msg(1));
    applyChange(t, { seq: 2, type: 'UPDATE', new: { id: 1, webinar_id: 1, hidden: true, seq: 2 },
      old: { id: 1 } });
    assert.deepEqual(ids(t), []);
    applyChange(t, { seq: 3, type: 'UPDATE', new: msg(1, { seq: 3 }), old: { id: 1 } });
    assert.deepEqual(ids(t), ['1']);
  });

  it('a replayed INSERT of a message deleted since removes it', () => {
    const t = new Timeline();
    t.upsert(msg(1));
    applyChange(t, { seq: 1, type: 'INSERT', new: null, old: { id: 1 } });
    assert.deepEqual(ids(t), []);
  });

  it('reports which optimistic message an INSERT resolves', () => {
    const t = new Timeline({ userId: 7 });
    t.addOptimistic({ client_msg_id: 'c9', content: 'hi' });
    const r = applyChange(t, { seq: 1, type: 'INSERT', new: msg(4, { client_msg_id: 'c9' }),
      old: null });
    assert.equal(r.resolved, 'c9');
    assert.deepEqual(ids(t), ['4']);
  });
});

describe('outbox storage', () => {
  const id = '3f2b8c1e-0c1a-4d2e-9f6a-1b2c3d4e5f60';
  it('round-trips pending and failed messages', () => {
    const text = serializeOutbox([
      { client_msg_id: id, content: 'hi', created_at: 'x', attempts: 2, state: 'sending' },
    ]);
    assert.deepEqual(parseOutbox(text), [
      { client_msg_id: id, content: 'hi', created_at: 'x', attempts: 2, state: 'pending',
        error: null },
    ]);
  });

  it('drops garbage instead of throwing', () => {
    assert.deepEqual(parseOutbox('{not json'), []);
    assert.deepEqual(parseOutbox(null), []);
    assert.deepEqual(parseOutbox(JSON.stringify({ v: 2, entries: [] })), []);
    const mixed = JSON.stringify({ v: 1, entries: [
      { client_msg_id: 'not-a-uuid', content: 'x' },
      { client_msg_id: id, content: '   ' },
      { client_msg_id: id, content: 'ok', attempts: -1 },
      { client_msg_id: id, content: 'duplicate id' },
      null,
    ] });
    const parsed = parseOutbox(mixed);
    assert.equal(parsed.length, 1);
    assert.equal(parsed[0].content, 'ok');
    assert.equal(parsed[0].attempts, 0);
  });
});

describe('configuration and small helpers', () => {
  it('reads numeric overrides from the URL and ignores nonsense', () => {
    const c = readConfig(new URLSearchParams('sendTimeoutMs=1500&silenceMs=abc&reconnectBaseMs=1'
      + '&pollWaitS=0&log=debug&evil=1'));
    assert.equal(c.sendTimeoutMs, 1500);
    assert.equal(c.silenceMs, DEFAULTS.silenceMs);
    assert.equal(c.reconnectBaseMs, DEFAULTS.reconnectBaseMs);
    assert.equal(c.pollWaitS, 0);
    assert.equal(c.logLevel, 'debug');
    assert.equal(c.evil, undefined);
    assert.ok(Object.isFrozen(c));
    assert.equal(readConfig({ heartbeatMs: '700' }).heartbeatMs, 700);
    assert.equal(readConfig(null).sendTimeoutMs, 10000);
  });

  it('makes v4 UUIDs and deterministic topics', () => {
    const a = newClientMsgId();
    assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.notEqual(a, newClientMsgId());
    const fallback = newClientMsgId({ getRandomValues: (b) => b.fill(255) });
    assert.match(fallback, /^ffffffff-ffff-4fff-bfff-ffffffffffff$/);
    assert.equal(topicFor(42), 'webinar:42:messages');
  });

  it('redirects after log-in only to chat paths of this site', () => {
    assert.equal(safeNextPath('/webinars/3?sendTimeoutMs=10'), '/webinars/3?sendTimeoutMs=10');
    for (const bad of ['//evil.example/webinars/1', 'https://evil.example', '/webinars/1/../x',
      '/admin', null, '/webinars/1?x=<script>']) {
      assert.equal(safeNextPath(bad), null, String(bad));
    }
  });
});

describe('presentation decisions', () => {
  it('a pending message waits for the network while offline, and is retried online', () => {
    assert.equal(localStateLabel('pending', { online: false }), 'Waiting for network…');
    assert.equal(localStateLabel('pending', { online: true }), 'Not sent yet · retrying');
    assert.equal(localStateLabel('pending'), 'Not sent yet · retrying');
    assert.equal(localStateLabel('sending', { online: false }), 'Sending…');
    assert.equal(localStateLabel('failed', { online: false }), 'Not sent');
    assert.equal(localStateLabel('sent'), '');
  });

  it('offers staff hide/unhide and delete, authors delete, nothing on unsent messages', () => {
    assert.deepEqual(messageActions({ kind: 'server', staff: true }), ['hide', 'delete']);
    assert.deepEqual(messageActions({ kind: 'server', staff: true, hidden: true }),
      ['unhide', 'delete']);
    assert.deepEqual(messageActions({ kind: 'server', own: true }), ['delete']);
    assert.deepEqual(messageActions({ kind: 'server' }), []);
    assert.deepEqual(messageActions({ kind: 'local', staff: true, own: true }), []);
  });
});

describe('timeline layout: author groups and day separators', () => {
  // Local wall-clock times (the viewer's time zone, whatever the machine's is).
  const at = (day, hour, minute = 0) => new Date(2026, 2, day, hour, minute).getTime();
  const NOW = at(12, 15);
  const e = (key, author, time) => ({ key, author, at: time });
  const layout = (entries) => timelineLayout(entries, { now: NOW });
  const groups = (entries) => layout(entries).map((l) => (l.groupStart ? 'S' : 'c')).join('');
  const seps = (entries) => layout(entries).filter((l) => l.day)
    .map((l) => `${l.key}:${l.day.kind}:${l.day.key}`);

  it('shows the name once for consecutive messages of one author within a few minutes', () => {
    assert.equal(groups([e('1', 7, at(12, 10, 0)), e('2', 7, at(12, 10, 1)),
      e('3', 7, at(12, 10, 4)), e('4', 8, at(12, 10, 4)), e('5', 7, at(12, 10, 4))]), 'SccSS');
  });

  it('starts a new group after a pause longer than GROUP_GAP_MS', () => {
    const t = at(12, 10);
    assert.equal(groups([e('1', 7, t), e('2', 7, t + GROUP_GAP_MS), e('3', 7,
      t + 2 * GROUP_GAP_MS + 1)]), 'ScS');
  });

  it('never groups unknown authors or undated messages', () => {
    assert.equal(groups([e('1', null, at(12, 1)), e('2', null, at(12, 1))]), 'SS');
    assert.equal(groups([e('1', 7, at(12, 1)), e('2', 7, null), e('3', 7, at(12, 1))]), 'SSS');
  });

  it('puts a separator before the first message of each local day: Today, Yesterday, a date', () => {
    const entries = [e('1', 7, at(9, 23, 58)), e('2', 7, at(10, 0, 1)), e('3', 7, at(11, 8)),
      e('4', 7, at(12, 0)), e('5', 7, at(12, 9))];
    assert.deepEqual(seps(entries), ['1:date:2026-03-09', '2:date:2026-03-10',
      '3:yesterday:2026-03-11', '4:today:2026-03-12']);
    assert.equal(groups(entries), 'SSSSS');
    // Two minutes apart but across midnight: the separator starts a new group.
    assert.equal(groups([e('a', 7, at(11, 23, 59)), e('b', 7, at(12, 0, 1))]), 'SS');
  });

  it('is the same whatever the history was before: recomputed, prepending just moves things', () => {
    const today = [e('10', 7, at(12, 9, 2)), e('11', 7, at(12, 9, 3))];
    assert.deepEqual(seps(today), ['10:today:2026-03-12']);
    const older = [e('8', 7, at(11, 20)), e('9', 7, at(12, 9, 0))];
    const all = layout([...older, ...today]);
    assert.deepEqual(all.map((l) => [l.key, l.groupStart, l.day && l.day.kind]), [
      ['8', true, 'yesterday'], ['9', true, 'today'], ['10', false, null], ['11', false, null]]);
  });

  it('regroups around a hidden or deleted message (it is simply not in the list)', () => {
    const a1 = e('1', 7, at(12, 10, 0));
    const b = e('2', 8, at(12, 10, 1));
    const a2 = e('3', 7, at(12, 10, 2));
    assert.equal(groups([a1, b, a2]), 'SSS');
    assert.equal(groups([a1, a2]), 'Sc');
    assert.deepEqual(seps([a1, a2]), ['1:today:2026-03-12']);
    // The first message of the day is deleted: the separator moves to the next one.
    assert.deepEqual(seps([b, a2]), ['2:today:2026-03-12']);
  });

  it('never shows a day twice when dates come out of order', () => {
    // Ordered by id, but the second was stamped a day earlier (clocks disagree): it stays under
    // "Today" instead of opening a second "Yesterday" below it.
    const entries = [e('1', 7, at(11, 12)), e('2', 7, at(12, 9)), e('3', 7, at(11, 23)),
      e('4', 8, at(12, 10))];
    assert.deepEqual(seps(entries), ['1:yesterday:2026-03-11', '2:today:2026-03-12']);
    assert.equal(layout([e('1', 7, null), e('2', 7, at(12, 1))])[1].day.kind, 'today');
  });

  it('decides days in local time and labels them', () => {
    assert.equal(localDayKey(at(1, 0, 0)), '2026-03-01');
    assert.equal(localDayKey(at(1, 23, 59)), '2026-03-01');
    // Yesterday across a month boundary.
    const firstOfApril = new Date(2026, 3, 1, 8).getTime();
    const l = timelineLayout([e('1', 7, at(31, 22))], { now: firstOfApril });
    assert.equal(l[0].day.kind, 'yesterday');
    const format = (ms) => `on ${localDayKey(ms)}`;
    assert.equal(dayLabel({ kind: 'today', at: NOW }, format), 'Today');
    assert.equal(dayLabel({ kind: 'yesterday', at: NOW }, format), 'Yesterday');
    assert.equal(dayLabel({ kind: 'date', at: at(3, 9) }, format), 'on 2026-03-03');
    const intl = new Intl.DateTimeFormat('en-US', { weekday: 'long', month: 'long', day: 'numeric' });
    assert.equal(dayLabel({ kind: 'date', at: at(3, 9) }, (ms) => intl.format(ms)),
      'Tuesday, March 3');
  });
});
