// Room state on the page (chat-core.js applyRoomEvent / composerState / roomNotice):
// node --test tests/js/
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  applyChange, applyRoomEvent, composerState, roomNotice, Timeline,
} from '../../src/webinar_chat/web/chat-core.js';

const webinar = { id: 1, title: 'T', chat_mode: 'everyone', chat_open: true, slow_mode_seconds: 0,
  pinned: null, last_seq: 10, role: 'attendee' };
const room = (seq, extra = {}) => ({ seq, type: 'ROOM', old: null,
  new: { chat_mode: 'everyone', slow_mode_seconds: 0, pinned: null, ...extra } });

describe('ROOM events', () => {
  it('replace the whole room state and say what changed', () => {
    const r = applyRoomEvent(webinar, 10, room(11, { chat_mode: 'read_only',
      pinned: { content: 'Break', pinned_at: '2026-12-02T10:00:00.000Z' } }));
    assert.equal(r.roomSeq, 11);
    assert.equal(r.webinar.chat_mode, 'read_only');
    assert.equal(r.webinar.chat_open, false);
    assert.equal(r.webinar.pinned.content, 'Break');
    assert.deepEqual(r.changed, ['chat_mode', 'pinned']);
    assert.equal(r.webinar.title, 'T'); // the rest of the webinar stays
  });

  it('at or below the seq the webinar was read at change nothing', () => {
    for (const seq of [9, 10]) {
      const r = applyRoomEvent(webinar, 10, room(seq, { chat_mode: 'read_only' }));
      assert.equal(r.webinar, webinar);
      assert.deepEqual(r.changed, []);
    }
  });

  it('converge whatever was collapsed: the highest seq wins', () => {
    const events = [room(11, { slow_mode_seconds: 30 }), room(12, { chat_mode: 'hosts_only' }),
      room(13, { chat_mode: 'everyone', slow_mode_seconds: 5 })];
    let live = { webinar, roomSeq: 10 };
    for (const e of events) live = applyRoomEvent(live.webinar, live.roomSeq, e);
    // A reload read the webinar at 13; a replay after 12 gets only the last one.
    const replayed = applyRoomEvent(webinar, 12, events[2]);
    assert.deepEqual(live.webinar, replayed.webinar);
    assert.equal(live.webinar.slow_mode_seconds, 5);
  });

  it('refuse an unknown mode instead of guessing', () => {
    const r = applyRoomEvent(webinar, 10, room(11, { chat_mode: 'party' }));
    assert.equal(r.webinar, webinar);
  });

  it('are not message changes: applyChange ignores them with a warning', () => {
    const result = applyChange(new Timeline({ staff: false, userId: 7 }), room(11));
    assert.equal(result.applied, false);
    assert.match(result.warning, /unknown change type/);
  });
});

describe('composer and notices', () => {
  it('attendees cannot post in read_only, staff can; hosts_only says who reads it', () => {
    assert.deepEqual(composerState({ chat_mode: 'read_only' }), { canPost: false, reason: 'read_only' });
    assert.deepEqual(composerState({ chat_mode: 'read_only' }, { staff: true }),
      { canPost: true, reason: null });
    assert.deepEqual(composerState({ chat_mode: 'hosts_only' }), { canPost: true, reason: 'hosts_only' });
    assert.deepEqual(composerState({ chat_mode: 'everyone' }), { canPost: true, reason: null });
  });

  it('a notice names the change for a person', () => {
    assert.match(roomNotice({ chat_mode: 'read_only' }, ['chat_mode']), /only hosts can post/);
    assert.match(roomNotice({ chat_mode: 'hosts_only' }, ['chat_mode']), /seen by the hosts only/);
    assert.match(roomNotice({ chat_mode: 'everyone', slow_mode_seconds: 10 },
      ['slow_mode_seconds']), /one message every 10 s/);
    assert.equal(roomNotice({ chat_mode: 'everyone' }, ['pinned']), null); // the pin shows itself
  });
});
