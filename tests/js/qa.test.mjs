// Q&A on the page: chat-core.js QuestionBoard / questionActions (pure), and the ChatClient's
// QUESTION events, list and own answers (chat-client.js) against scripted fakes.
// node --test tests/js/
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { AuthSession } from '../../src/webinar_chat/web/auth.js';
import {
  ChatClient, QuestionBoard, RealtimeConnection, questionActions, readConfig,
} from '../../src/webinar_chat/web/chat-client.js';
import { Monitor } from '../../src/webinar_chat/web/monitor.js';
import {
  FakeClock, fakeFetch, fakeSocketClass, memoryStorage, recordingLogger, settle, silentLogger,
} from './fakes.mjs';

const WEBINAR = 5;
const ME = { id: 7, display_name: 'Ann', email: 'ann@example.test' };
const TOPIC = `webinar:${WEBINAR}:messages`;

function q(id, seq, extra = {}) {
  return { id, webinar_id: WEBINAR, user_id: 9, content: `q${id}`, created_at:
    '2026-12-02T10:00:00.000Z', status: 'open', votes: 0, seq, user: { display_name: 'Bo',
    role: 'attendee' }, ...extra };
}
const event = (seq, id, state) => ({ seq, type: 'QUESTION', new: state, old: { id } });
const stub = (id, seq) => ({ id, webinar_id: WEBINAR, hidden: true, seq });

describe('QuestionBoard', () => {
  it('keeps per question the state of the highest seq, in any arrival order', () => {
    const events = [event(1, 1, q(1, 1)), event(2, 2, q(2, 2)),
      event(3, 1, q(1, 3, { votes: 1 })), event(4, 1, q(1, 4, { votes: 1, status: 'answered' })),
      event(5, 2, stub(2, 5))];
    const live = new QuestionBoard();
    for (const e of events) live.applyEvent(e);
    const shuffled = new QuestionBoard();
    for (const e of [events[3], events[0], events[4], events[2], events[1]]) {
      shuffled.applyEvent(e);
    }
    assert.deepEqual(shuffled.sorted(), live.sorted());
    assert.deepEqual(live.sorted().map((x) => [x.id, x.status, x.votes]), [[1, 'answered', 1]]);
    // A replay of the same entries with the current state changes nothing.
    assert.equal(live.applyEvent(event(3, 1, q(1, 4, { votes: 1, status: 'answered' }))), false);
  });

  it('drops a question whose state is a stub or null, and brings it back when reopened', () => {
    const board = new QuestionBoard();
    board.applyEvent(event(1, 1, q(1, 1)));
    assert.equal(board.size, 1);
    assert.equal(board.applyEvent(event(2, 1, stub(1, 2))), true);
    assert.equal(board.size, 0);
    assert.equal(board.apply(1, q(1, 1), 1), false); // an older state cannot resurrect it
    board.applyEvent(event(3, 1, q(1, 3)));
    assert.equal(board.size, 1);
    board.applyEvent(event(4, 1, null));
    assert.equal(board.size, 0);
  });

  it('sorts like the server and keeps the viewer\'s own votes out of the shared states', () => {
    const board = new QuestionBoard();
    board.load([q(1, 1, { votes: 2, voted: true }), q(2, 2, { votes: 5 }),
      q(3, 3, { votes: 2, voted: false })]);
    assert.deepEqual(board.sorted('votes').map((x) => x.id), [2, 1, 3]);
    assert.deepEqual(board.sorted('newest').map((x) => x.id), [3, 2, 1]);
    assert.equal(board.voted(1), true);
    assert.equal(board.voted(2), false);
    board.applyEvent(event(4, 1, q(1, 4, { votes: 3 })));
    assert.equal(board.get(1).voted, true); // an event never carries (or clears) the own vote
    board.rememberVote(1, false);
    assert.equal(board.get(1).voted, false);
    assert.equal(board.openCount(), 3);
  });

  it('gives staff the buttons of each status and attendees none', () => {
    assert.deepEqual(questionActions({ staff: true, status: 'open' }), ['answered', 'dismissed']);
    assert.deepEqual(questionActions({ staff: true, status: 'answered' }), ['open', 'dismissed']);
    assert.deepEqual(questionActions({ staff: true, status: 'dismissed' }), ['open']);
    assert.deepEqual(questionActions({ staff: false, status: 'open' }), []);
  });
});

function setup(handle) {
  const clock = new FakeClock();
  const storage = memoryStorage();
  storage.setItem('webinar-chat:session', JSON.stringify({ access_token: 'tok-1',
    refresh_token: 'ref-1', user: ME }));
  const { fetch, calls } = fakeFetch((method, path, body, call) => {
    const answer = handle(method, path, body, call);
    if (answer !== undefined) return answer;
    if (path === `/api/webinars/${WEBINAR}`) {
      return { status: 200, body: { success: true, webinar: { id: WEBINAR, title: 'W',
        chat_open: true, chat_mode: 'everyone', slow_mode_seconds: 0, pinned: null, last_seq: 3,
        role: 'attendee' } } };
    }
    if (path === '/api/me') return { status: 200, body: { success: true, user: ME, webinars: [] } };
    if (path.startsWith(`/api/webinars/${WEBINAR}/messages`)) {
      return { status: 200, body: { success: true, messages: [], has_more: false, last_seq: 3 } };
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
    logger: silentLogger, monitor: new Monitor({ logger: silentLogger, send: null }) });
  const client = new ChatClient({ webinarId: WEBINAR, auth, connection, storage, config, env,
    logger: recordingLogger(), monitor: new Monitor({ logger: silentLogger, send: null }) });
  const emitted = [];
  client.subscribe((e) => emitted.push(e.type));
  return { clock, calls, client, Socket, emitted };
}

describe('ChatClient Q&A', () => {
  it('loads the list with own votes, then applies QUESTION events from the socket', async () => {
    const ctx = setup((method, path) => (path.startsWith(`/api/webinars/${WEBINAR}/questions`)
      ? { status: 200, body: { success: true, questions: [q(1, 2, { votes: 1, voted: true })],
        has_more: false, last_seq: 3 } } : undefined));
    await ctx.client.start();
    await settle();
    const ws = ctx.Socket.instances.at(-1);
    ws.open();
    ws.receive({ type: 'hello', heartbeat_interval: 5 });
    ws.receive({ type: 'joined', topic: TOPIC, ref: '1', head_seq: 3 });
    assert.deepEqual(ctx.client.questions.sorted().map((x) => [x.id, x.votes, x.voted]),
      [[1, 1, true]]);
    ws.receive({ type: 'changes', topic: TOPIC, events: [event(4, 1, q(1, 4, { votes: 2 })),
      event(5, 6, q(6, 5))] });
    assert.deepEqual(ctx.client.questions.sorted().map((x) => [x.id, x.votes, x.voted]),
      [[1, 2, true], [6, 0, false]]);
    assert.equal(ctx.client.lastSeq, 5);
    assert.ok(ctx.emitted.includes('questions'));
    assert.equal(ctx.client.timeline.items().length, 0); // never taken for a message
    ws.receive({ type: 'changes', topic: TOPIC, events: [event(6, 6, stub(6, 6))] });
    assert.deepEqual(ctx.client.questions.sorted().map((x) => x.id), [1]);
  });

  it('asks once with one clientMsgId across a 500, a lost answer and the 409', async () => {
    let n = 0;
    const ctx = setup((method, path, body) => {
      if (path.startsWith(`/api/webinars/${WEBINAR}/questions`) && method === 'GET') {
        return { status: 200, body: { success: true, questions: [], has_more: false,
          last_seq: 3 } };
      }
      if (path !== `/api/webinars/${WEBINAR}/questions`) return undefined;
      n += 1;
      if (n === 1) return { status: 500, body: { success: false, error: 'boom' } };
      return { status: 409, body: { success: false, code: 'duplicate', error: 'Duplicate',
        question: q(3, 4, { content: body.content, user_id: ME.id }) } };
    });
    await ctx.client.start();
    await settle();
    const asking = ctx.client.askQuestion('Slides?');
    await ctx.clock.advance(60000);
    const result = await asking;
    assert.equal(result.ok, true);
    const posts = ctx.calls.filter((c) => c.method === 'POST'
      && c.path === `/api/webinars/${WEBINAR}/questions`);
    assert.equal(posts.length, 2);
    assert.equal(posts[0].body.clientMsgId, posts[1].body.clientMsgId);
    assert.deepEqual(ctx.client.questions.sorted().map((x) => x.content), ['Slides?']);
  });

  it('remembers its own vote from the toggle answer', async () => {
    const ctx = setup((method, path, body) => {
      if (path.startsWith(`/api/webinars/${WEBINAR}/questions`)) {
        return { status: 200, body: { success: true, questions: [q(1, 2)], has_more: false,
          last_seq: 3 } };
      }
      if (path === '/api/questions/1/vote') {
        return { status: 200, body: { success: true, voted: body.voted,
          question: q(1, 9, { votes: body.voted ? 1 : 0 }) } };
      }
      return undefined;
    });
    await ctx.client.start();
    await settle();
    assert.equal((await ctx.client.voteQuestion(1, true)).ok, true);
    assert.deepEqual([ctx.client.questions.get(1).votes, ctx.client.questions.get(1).voted],
      [1, true]);
    await ctx.client.voteQuestion(1, false);
    assert.equal(ctx.client.questions.get(1).voted, false);
  });
});
