// The page's languages (i18n.js): the choice of language, the catalogues, plurals, server errors,
// and the pure functions of chat-core.js that speak: node --test tests/js/
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { afterEach, describe, it } from 'node:test';

import {
  classifySendResult, dayLabel, localStateLabel, questionActionText, roomNotice,
} from '../../src/webinar_chat/web/chat-core.js';
import {
  LANGUAGES, MESSAGES, chooseLanguage, clockText, durationText, language, locale, localeFor,
  rememberLanguage, serverErrorText, setLanguage, t,
} from '../../src/webinar_chat/web/i18n.js';

afterEach(() => setLanguage('en'));

const placeholders = (value) => {
  const texts = typeof value === 'string' ? [value] : Object.values(value);
  return [...new Set(texts.flatMap((text) => [...text.matchAll(/\{(\w+)\}/g)].map((m) => m[1])))]
    .sort();
};

describe('choosing the language', () => {
  it('takes ?lang= first, then the stored choice, then the browser, then English', () => {
    assert.equal(chooseLanguage({ param: 'ko', stored: 'en', languages: ['en-US'] }), 'ko');
    assert.equal(chooseLanguage({ param: null, stored: 'ko', languages: ['en-US'] }), 'ko');
    assert.equal(chooseLanguage({ param: null, stored: null, languages: ['ko-KR', 'en'] }), 'ko');
    assert.equal(chooseLanguage({ languages: ['de-DE', 'ko'] }), 'ko'); // the first we speak
    assert.equal(chooseLanguage({ languages: ['de-DE', 'fr'] }), 'en');
    assert.equal(chooseLanguage(), 'en');
  });

  it('skips values it does not know instead of failing', () => {
    assert.equal(chooseLanguage({ param: 'xx', stored: 'KO', languages: [] }), 'ko');
    assert.equal(chooseLanguage({ param: '', stored: 42, languages: ['en_GB'] }), 'en');
  });

  it('formats dates in the browser\'s own locale of the language, else the usual one', () => {
    assert.equal(localeFor('en', ['en-GB', 'ko-KR']), 'en-GB');
    assert.equal(localeFor('ko', ['en-GB', 'ko-KR']), 'ko-KR');
    assert.equal(localeFor('ko', ['en-GB']), 'ko-KR');
    assert.equal(localeFor('en', ['ko']), 'en-US');
    setLanguage('ko', ['ko-KR']);
    assert.equal(language(), 'ko');
    assert.equal(locale(), 'ko-KR');
    setLanguage('fr');
    assert.equal(language(), 'en');
  });

  it('remembers a choice in storage, and in the URL when the URL named one', () => {
    const stored = new Map();
    const storage = { setItem: (k, v) => stored.set(k, v) };
    const urls = [];
    const history = { state: null, replaceState: (_s, _t, url) => urls.push(url) };
    rememberLanguage('ko', { storage, location: { href: 'http://x/webinars/1?lang=en#m' }, history });
    assert.equal(stored.get('webinar-chat:lang'), 'ko');
    assert.deepEqual(urls, ['/webinars/1?lang=ko#m']);
    rememberLanguage('en', { storage, location: { href: 'http://x/webinars/1' }, history });
    assert.equal(urls[1], '/webinars/1');
  });
});

describe('the catalogues', () => {
  it('has every text in every language, with the same placeholders', () => {
    const english = Object.keys(MESSAGES.en).sort();
    for (const lang of Object.keys(LANGUAGES)) {
      assert.deepEqual(Object.keys(MESSAGES[lang]).sort(), english, `keys of ${lang}`);
      for (const key of english) {
        assert.deepEqual(placeholders(MESSAGES[lang][key]), placeholders(MESSAGES.en[key]),
          `placeholders of ${lang} ${key}`);
        assert.ok(typeof MESSAGES[lang][key] === 'string' || MESSAGES[lang][key].other,
          `${lang} ${key} has an "other" plural form`);
      }
    }
  });

  it('translates every Korean text (none is left in English)', () => {
    const allowed = /^(Q&A|HTTP \{status\}|\{n\} s)$/;
    for (const [key, value] of Object.entries(MESSAGES.ko)) {
      const text = typeof value === 'string' ? value : value.other;
      if (allowed.test(text)) continue;
      assert.match(text, /[\uac00-\ud7a3]/, `ko ${key} has Hangul: ${text}`);
    }
  });

  it('every key the page files use exists', () => {
    const files = ['chat-ui.js', 'qa-ui.js', 'chat-client.js', 'chat-core.js', 'login.js',
      'login.html'];
    const used = new Set();
    for (const file of files) {
      const source = readFileSync(new URL(`../../src/webinar_chat/web/${file}`, import.meta.url),
        'utf8');
      for (const m of source.matchAll(/\bt\(\s*'([\w.]+)'/g)) used.add(m[1]);
      for (const m of source.matchAll(/data-i18n="([\w.]+)"/g)) used.add(m[1]);
    }
    assert.ok(used.size > 60, `found ${used.size} keys`);
    for (const key of used) assert.ok(Object.hasOwn(MESSAGES.en, key), `missing key ${key}`);
  });
});

describe('texts', () => {
  it('fills placeholders and chooses plural forms', () => {
    assert.equal(t('presence.people', { count: 1 }), '1 person online');
    assert.equal(t('presence.people', { count: 2 }), '2 people online');
    assert.equal(t('composer.wait', { n: 7 }), 'Wait 7 s');
    setLanguage('ko');
    assert.equal(t('presence.people', { count: 1 }), '1명 접속 중');
    assert.equal(t('presence.people', { count: 12 }), '12명 접속 중');
    assert.equal(t('composer.wait', { n: 7 }), '7초 대기');
    assert.equal(t('no.such.key'), 'no.such.key');
  });

  it('says durations in whole units', () => {
    assert.deepEqual([10, 60, 300, 1800, 86400, 90].map(durationText),
      ['10 s', '1 min', '5 min', '30 min', '24 h', '90 s']);
    setLanguage('ko');
    assert.deepEqual([10, 60, 86400].map(durationText), ['10초', '1분', '24시간']);
  });

  it('tells times in the viewer\'s locale', () => {
    const at = Date.UTC(2026, 2, 3, 21, 5, 9);
    setLanguage('ko', ['ko-KR']);
    assert.equal(clockText(at), new Intl.DateTimeFormat('ko-KR', { hour: '2-digit',
      minute: '2-digit', second: '2-digit', hourCycle: 'h23' }).format(at));
  });

  it('keeps the server\'s own words in English and says what a code means in Korean', () => {
    const refused = { success: false, code: 'chat_closed', error: 'The chat is read-only' };
    assert.equal(serverErrorText(refused, 403), 'The chat is read-only');
    assert.equal(serverErrorText(null, 0), 'No connection');
    assert.equal(serverErrorText({ code: 'weird' }, 418), 'Error 418');
    assert.equal(serverErrorText(null, 403, 'fallback'), 'fallback');
    assert.equal(serverErrorText({ code: 'x', message: 'from a frame' }, 403), 'from a frame');
    setLanguage('ko', ['ko-KR']);
    assert.match(serverErrorText(refused, 403), /읽기 전용/);
    assert.equal(serverErrorText({ code: 'weird', error: 'English only' }, 400), 'English only');
    const until = '2026-03-03T21:05:09Z';
    const text = serverErrorText({ code: 'timed_out', error: 'x', banned_until: until }, 403);
    assert.ok(text.startsWith(clockText(Date.parse(until))), text);
    assert.equal(serverErrorText(null, 0), '연결 없음');
  });

  it('reaches the pure functions of chat-core', () => {
    setLanguage('ko');
    assert.equal(localStateLabel('pending', { online: false }), '네트워크 연결을 기다리는 중…');
    assert.equal(dayLabel({ kind: 'today', at: 0 }, String), '오늘');
    assert.equal(questionActionText('answered'), '답변 완료로 표시');
    assert.equal(roomNotice({ chat_mode: 'read_only' }, ['chat_mode']),
      '이제 채팅은 읽기 전용입니다. 호스트만 글을 쓸 수 있습니다.');
    const rejected = classifySendResult(403, { code: 'chat_closed', error: 'read-only' });
    assert.equal(rejected.kind, 'rejected');
    assert.match(rejected.error, /읽기 전용/);
    assert.equal(classifySendResult(0, null).error, '연결 없음');
  });
});
