// The page's languages (docs/i18n.md): every text the chat and log-in pages show, in English and
// Korean. The language comes from `?lang=` (a link a host shares), else the viewer's own choice
// (the page's language menu, kept in this browser), else the browser's languages, else English.
// Times and dates use the viewer's locale for that language: the browser's own tag when it speaks
// the language (en-GB keeps day-month order), else the language's usual one.
//
// Pure apart from the one-time detection at import in a browser, so Node tests can switch
// language with setLanguage().

export const LANGUAGES = Object.freeze({ en: 'English', ko: '한국어' });
export const LANGUAGE_STORAGE_KEY = 'webinar-chat:lang';
const DEFAULT_LOCALE = { en: 'en-US', ko: 'ko-KR' };

// A value is a template with {name} placeholders, or plural forms by Intl.PluralRules category
// (chosen by the `count` parameter).
const EN = {
  'page.chatTitle': 'Chat',
  'page.loginTitle': 'Log in',
  'language.label': 'Language',

  'status.connecting': 'Connecting…',
  'status.connecting.tip': 'Connecting to the chat.',
  'status.live': 'Live',
  'status.live.tip': 'Connected: new messages arrive instantly.',
  'status.reconnecting': 'Reconnecting…',
  'status.reconnecting.tip': 'The live connection dropped; trying again.',
  'status.fallback': 'Live (backup connection)',
  'status.fallback.tip': 'The direct live connection is blocked or unstable, so the chat uses a '
    + 'backup connection (fallback: HTTP long-polling). Messages may arrive a few seconds late; '
    + 'sending works normally.',
  'status.offline': 'Offline',
  'status.offline.tip': 'You are offline. Messages you write are kept and sent when you are back.',

  'duration.s': '{n} s',
  'duration.min': '{n} min',
  'duration.h': '{n} h',

  'menu.label': 'Message actions',
  'menu.hide': 'Hide',
  'menu.unhide': 'Unhide',
  'menu.delete': 'Delete',
  'menu.timeout': 'Time out…',
  'menu.timeoutFor': 'Time out {duration}',
  'menu.ban': 'Ban',
  'menu.unban': 'Unban',
  'menu.confirmBan': 'Confirm ban',
  'menu.confirmDelete': 'Confirm delete',

  'ban.banned': 'You are banned from this chat.',
  'ban.timedOut': 'You are timed out until {time}.',
  'ban.over': 'You can chat again.',

  'header.loading': 'Loading chat…',
  'header.readOnly': 'Read-only',
  'header.hostsOnly': 'Messages to hosts only',
  'header.slowMode': 'Slow mode: one message every {n} s',
  'header.signedInAs': 'Signed in as {name}',
  'header.logout': 'Log out',
  'role.host': 'host',
  'role.moderator': 'moderator',
  'role.attendee': 'attendee',
  'badge.host': 'Host',
  'badge.moderator': 'Moderator',

  'settings.button': 'Settings',
  'settings.label': 'Chat settings',
  'settings.whoCanChat': 'Who can chat',
  'settings.mode.everyone': 'Everyone can chat',
  'settings.mode.hosts_only': 'Attendees’ messages to hosts only',
  'settings.mode.read_only': 'Read-only (hosts only post)',
  'settings.slowMode': 'Slow mode',
  'settings.slowOff': 'Off',
  'settings.transcript': 'Download transcript',
  'settings.announcement': 'Announcement',
  'settings.pinPlaceholder': 'An announcement everyone sees above the chat',
  'settings.pin': 'Pin',

  'pinned.label': 'Pinned',
  'pinned.aria': 'Pinned announcement',
  'pinned.when': 'Pinned {when}',
  'pinned.unpin': 'Unpin',

  'presence.people': { one: '{count} person online', other: '{count} people online' },
  'presence.now': { one: '{count} person online now', other: '{count} people online now' },
  'presence.word': ' online',

  'panel.label': 'Webinar chat',
  'timeline.earlier': 'Load earlier messages',
  'timeline.emptyTitle': 'No messages yet',
  'timeline.emptyHint': 'Say hello — everyone in the webinar will see it.',
  'timeline.label': 'Chat messages',
  'timeline.newBelow': { one: '{count} new message ↓', other: '{count} new messages ↓' },
  'day.today': 'Today',
  'day.yesterday': 'Yesterday',

  'message.you': 'You',
  'message.yours': '{name} (you)',
  'message.unknownAuthor': 'Unknown',
  'message.hidden': 'Hidden from attendees',
  'message.staffOnly': 'Seen by hosts only',
  'message.retry': 'Retry',
  'message.discard': 'Discard',
  'state.sending': 'Sending…',
  'state.retrying': 'Not sent yet · retrying',
  'state.waitingForNetwork': 'Waiting for network…',
  'state.failed': 'Not sent',

  'composer.label': 'Message',
  'composer.placeholder': 'Write a message…',
  'composer.placeholderHostsOnly': 'Write to the hosts… (only they see it)',
  'composer.placeholderReadOnly': 'Only hosts can post right now',
  'composer.send': 'Send',
  'composer.wait': 'Wait {n} s',
  'composer.hint': 'Enter to send · Shift+Enter for a new line',
  'composer.sendAgainIn': '{error} You can send again in {n} s.',

  'room.readOnlyStaff': 'The chat is read-only for attendees.',
  'room.readOnly': 'The chat is read-only now: only hosts can post.',
  'room.hostsOnlyStaff': 'Attendees\' messages are now seen by hosts only.',
  'room.hostsOnly': 'Your messages are now seen by the hosts only.',
  'room.everyone': 'Everyone can chat again.',
  'room.slowOn': 'Slow mode is on: one message every {n} s.',
  'room.slowOff': 'Slow mode is off.',

  'error.tooLong': 'Messages can be at most {n} characters.',
  'error.noConnection': 'No connection',
  'error.cannotReach': 'Cannot reach the server',
  'error.status': 'Error {status}',
  'error.notAccepted': 'The message was not accepted (HTTP {status})',
  'error.serverStatus': 'HTTP {status}',
  'error.tooManyMessages': 'Too many messages',
  'error.sessionExpired': 'Your session has expired',
  'error.cannotFollow': 'You cannot follow this chat',
  'error.loadEarlier': 'Could not load earlier messages.',
  'error.waitingForLogin': 'Waiting for you to log in again',
  'error.tooFast': 'Sending too fast: retrying in {n} s',
  'error.unreachable': 'The server could not be reached. Try again.',
  'error.sessionEnded': 'Your session has ended. Unsent messages are kept. ',
  'error.logInAgain': 'Log in again',
  'error.unavailable': 'This chat is not available: {error} ',
  'error.backToWebinars': 'Back to your webinars',

  'failed.hide': 'Could not hide the message: {error}',
  'failed.unhide': 'Could not unhide the message: {error}',
  'failed.delete': 'Could not delete the message: {error}',
  'failed.timeout': 'Could not time out the user: {error}',
  'failed.ban': 'Could not ban the user: {error}',
  'failed.unban': 'Could not unban the user: {error}',
  'failed.download': 'Could not download the transcript: {error}',
  'failed.vote': 'Could not vote on it: {error}',
  'failed.questionStatus': 'Could not change the question: {error}',
  'failed.chatMode': 'Could not change the chat mode: {error}',
  'failed.slowMode': 'Could not change slow mode: {error}',
  'failed.pin': 'Could not pin the announcement: {error}',
  'failed.unpin': 'Could not remove the announcement: {error}',
  'failed.ask': 'Could not ask: {error}',

  'qa.tabChat': 'Chat',
  'qa.tabQa': 'Q&A',
  'qa.tabsLabel': 'Chat or Q&A',
  'qa.tabOpen': 'Q&A, {count} open',
  'qa.sort': 'Sort',
  'qa.sortVotes': 'Top',
  'qa.sortNewest': 'Newest',
  'qa.emptyTitle': 'No questions yet',
  'qa.emptyHint': 'Ask the speakers — everyone can upvote the best ones.',
  'qa.listLabel': 'Questions',
  'qa.inputLabel': 'Question',
  'qa.placeholder': 'Ask a question…',
  'qa.ask': 'Ask',
  'qa.upvote': 'Upvote',
  'qa.removeUpvote': 'Remove your upvote',
  'qa.votes': { one: '{count} vote', other: '{count} votes' },
  'qa.someone': 'Someone',
  'qa.status.answered': 'Answered',
  'qa.status.dismissed': 'Dismissed',
  'qa.action.answered': 'Mark answered',
  'qa.action.dismissed': 'Dismiss',
  'qa.action.open': 'Reopen',

  'login.title': 'Log in to join the chat',
  'login.hint': 'Use the e-mail address you registered for the webinar with.',
  'login.email': 'E-mail',
  'login.password': 'Password',
  'login.submit': 'Log in',
  'login.busy': 'Logging in…',
  'login.missing': 'Enter your e-mail address and password.',
  'login.wrong': 'Wrong e-mail or password.',
  'login.offline': 'Cannot reach the server. Check your connection.',
  'login.unreachable': 'Cannot reach the server. Please try again.',
  'login.failed': 'Log-in failed (error {status}).',
  'login.webinars': 'Your webinars',
  'login.signedInAs': 'Signed in as {name} ({email})',
  'login.noWebinars': 'You are not registered for any webinar yet.',
  'login.chatOpen': 'Chat open',
  'login.chatClosed': 'Chat closed',
  'login.logout': 'Log out',
};

const KO = {
  'page.chatTitle': '채팅',
  'page.loginTitle': '로그인',
  'language.label': '언어',

  'status.connecting': '연결 중…',
  'status.connecting.tip': '채팅에 연결하고 있습니다.',
  'status.live': '실시간',
  'status.live.tip': '연결됨: 새 메시지가 바로 도착합니다.',
  'status.reconnecting': '다시 연결 중…',
  'status.reconnecting.tip': '실시간 연결이 끊어져 다시 연결하고 있습니다.',
  'status.fallback': '실시간 (보조 연결)',
  'status.fallback.tip': '직접 실시간 연결이 막혔거나 불안정해서 보조 연결(HTTP 롱 폴링)을 '
    + '사용합니다. 메시지가 몇 초 늦게 도착할 수 있지만 보내기는 평소처럼 됩니다.',
  'status.offline': '오프라인',
  'status.offline.tip': '오프라인 상태입니다. 작성한 메시지는 보관했다가 다시 연결되면 보냅니다.',

  'duration.s': '{n}초',
  'duration.min': '{n}분',
  'duration.h': '{n}시간',

  'menu.label': '메시지 작업',
  'menu.hide': '숨기기',
  'menu.unhide': '숨김 해제',
  'menu.delete': '삭제',
  'menu.timeout': '일시 차단…',
  'menu.timeoutFor': '{duration} 일시 차단',
  'menu.ban': '차단',
  'menu.unban': '차단 해제',
  'menu.confirmBan': '차단 확인',
  'menu.confirmDelete': '삭제 확인',

  'ban.banned': '이 채팅에서 차단되었습니다.',
  'ban.timedOut': '{time}까지 채팅이 일시 차단되었습니다.',
  'ban.over': '다시 채팅할 수 있습니다.',

  'header.loading': '채팅을 불러오는 중…',
  'header.readOnly': '읽기 전용',
  'header.hostsOnly': '메시지는 호스트에게만',
  'header.slowMode': '슬로 모드: {n}초에 메시지 하나',
  'header.signedInAs': '{name} 님으로 로그인됨',
  'header.logout': '로그아웃',
  'role.host': '호스트',
  'role.moderator': '운영자',
  'role.attendee': '참석자',
  'badge.host': '호스트',
  'badge.moderator': '운영자',

  'settings.button': '설정',
  'settings.label': '채팅 설정',
  'settings.whoCanChat': '채팅 가능 대상',
  'settings.mode.everyone': '모두 채팅 가능',
  'settings.mode.hosts_only': '참석자 메시지는 호스트에게만',
  'settings.mode.read_only': '읽기 전용 (호스트만 작성)',
  'settings.slowMode': '슬로 모드',
  'settings.slowOff': '끔',
  'settings.transcript': '대화 기록 내려받기',
  'settings.announcement': '공지',
  'settings.pinPlaceholder': '채팅 위에 모두에게 보이는 공지',
  'settings.pin': '고정',

  'pinned.label': '고정됨',
  'pinned.aria': '고정된 공지',
  'pinned.when': '{when}에 고정됨',
  'pinned.unpin': '고정 해제',

  'presence.people': { other: '{count}명 접속 중' },
  'presence.now': { other: '지금 {count}명 접속 중' },
  'presence.word': '명 접속',

  'panel.label': '웨비나 채팅',
  'timeline.earlier': '이전 메시지 불러오기',
  'timeline.emptyTitle': '아직 메시지가 없습니다',
  'timeline.emptyHint': '인사를 남겨 보세요. 웨비나 참석자 모두에게 보입니다.',
  'timeline.label': '채팅 메시지',
  'timeline.newBelow': { other: '새 메시지 {count}개 ↓' },
  'day.today': '오늘',
  'day.yesterday': '어제',

  'message.you': '나',
  'message.yours': '{name} (나)',
  'message.unknownAuthor': '알 수 없음',
  'message.hidden': '참석자에게 숨김',
  'message.staffOnly': '호스트만 볼 수 있음',
  'message.retry': '다시 시도',
  'message.discard': '버리기',
  'state.sending': '보내는 중…',
  'state.retrying': '아직 보내지 못함 · 다시 시도 중',
  'state.waitingForNetwork': '네트워크 연결을 기다리는 중…',
  'state.failed': '보내지 못함',

  'composer.label': '메시지',
  'composer.placeholder': '메시지를 입력하세요…',
  'composer.placeholderHostsOnly': '호스트에게 보내기… (호스트만 볼 수 있음)',
  'composer.placeholderReadOnly': '지금은 호스트만 글을 쓸 수 있습니다',
  'composer.send': '보내기',
  'composer.wait': '{n}초 대기',
  'composer.hint': 'Enter: 보내기 · Shift+Enter: 줄 바꿈',
  'composer.sendAgainIn': '{error} {n}초 후에 다시 보낼 수 있습니다.',

  'room.readOnlyStaff': '이제 참석자는 채팅을 읽기만 할 수 있습니다.',
  'room.readOnly': '이제 채팅은 읽기 전용입니다. 호스트만 글을 쓸 수 있습니다.',
  'room.hostsOnlyStaff': '이제 참석자의 메시지는 호스트만 볼 수 있습니다.',
  'room.hostsOnly': '이제 내 메시지는 호스트만 볼 수 있습니다.',
  'room.everyone': '다시 모두 채팅할 수 있습니다.',
  'room.slowOn': '슬로 모드가 켜졌습니다: {n}초에 메시지 하나.',
  'room.slowOff': '슬로 모드가 꺼졌습니다.',

  'error.tooLong': '메시지는 {n}자까지 쓸 수 있습니다.',
  'error.noConnection': '연결 없음',
  'error.cannotReach': '서버에 연결할 수 없습니다',
  'error.status': '오류 {status}',
  'error.notAccepted': '메시지가 접수되지 않았습니다 (HTTP {status})',
  'error.serverStatus': 'HTTP {status}',
  'error.tooManyMessages': '메시지가 너무 많습니다',
  'error.sessionExpired': '세션이 만료되었습니다',
  'error.cannotFollow': '이 채팅을 볼 수 없습니다',
  'error.loadEarlier': '이전 메시지를 불러오지 못했습니다.',
  'error.waitingForLogin': '다시 로그인하기를 기다리는 중',
  'error.tooFast': '너무 빨리 보내고 있습니다: {n}초 후 다시 시도',
  'error.unreachable': '서버에 연결하지 못했습니다. 다시 시도하세요.',
  'error.sessionEnded': '세션이 끝났습니다. 보내지 못한 메시지는 보관됩니다. ',
  'error.logInAgain': '다시 로그인',
  'error.unavailable': '이 채팅을 이용할 수 없습니다: {error} ',
  'error.backToWebinars': '내 웨비나 목록으로',

  'failed.hide': '메시지를 숨기지 못했습니다: {error}',
  'failed.unhide': '메시지 숨김을 해제하지 못했습니다: {error}',
  'failed.delete': '메시지를 삭제하지 못했습니다: {error}',
  'failed.timeout': '사용자를 일시 차단하지 못했습니다: {error}',
  'failed.ban': '사용자를 차단하지 못했습니다: {error}',
  'failed.unban': '사용자 차단을 해제하지 못했습니다: {error}',
  'failed.download': '대화 기록을 내려받지 못했습니다: {error}',
  'failed.vote': '추천하지 못했습니다: {error}',
  'failed.questionStatus': '질문 상태를 바꾸지 못했습니다: {error}',
  'failed.chatMode': '채팅 모드를 바꾸지 못했습니다: {error}',
  'failed.slowMode': '슬로 모드를 바꾸지 못했습니다: {error}',
  'failed.pin': '공지를 고정하지 못했습니다: {error}',
  'failed.unpin': '공지를 내리지 못했습니다: {error}',
  'failed.ask': '질문하지 못했습니다: {error}',

  'qa.tabChat': '채팅',
  'qa.tabQa': 'Q&A',
  'qa.tabsLabel': '채팅 또는 Q&A',
  'qa.tabOpen': 'Q&A, 미답변 {count}개',
  'qa.sort': '정렬',
  'qa.sortVotes': '추천순',
  'qa.sortNewest': '최신순',
  'qa.emptyTitle': '아직 질문이 없습니다',
  'qa.emptyHint': '발표자에게 질문해 보세요. 좋은 질문은 누구나 추천할 수 있습니다.',
  'qa.listLabel': '질문',
  'qa.inputLabel': '질문',
  'qa.placeholder': '질문을 입력하세요…',
  'qa.ask': '질문하기',
  'qa.upvote': '추천',
  'qa.removeUpvote': '추천 취소',
  'qa.votes': { other: '추천 {count}개' },
  'qa.someone': '익명',
  'qa.status.answered': '답변 완료',
  'qa.status.dismissed': '닫힘',
  'qa.action.answered': '답변 완료로 표시',
  'qa.action.dismissed': '닫기',
  'qa.action.open': '다시 열기',

  'login.title': '로그인하고 채팅에 참여하세요',
  'login.hint': '웨비나에 등록할 때 쓴 이메일 주소를 입력하세요.',
  'login.email': '이메일',
  'login.password': '비밀번호',
  'login.submit': '로그인',
  'login.busy': '로그인 중…',
  'login.missing': '이메일 주소와 비밀번호를 입력하세요.',
  'login.wrong': '이메일 또는 비밀번호가 올바르지 않습니다.',
  'login.offline': '서버에 연결할 수 없습니다. 인터넷 연결을 확인하세요.',
  'login.unreachable': '서버에 연결할 수 없습니다. 다시 시도하세요.',
  'login.failed': '로그인하지 못했습니다 (오류 {status}).',
  'login.webinars': '내 웨비나',
  'login.signedInAs': '{name} 님({email})으로 로그인됨',
  'login.noWebinars': '아직 등록한 웨비나가 없습니다.',
  'login.chatOpen': '채팅 열림',
  'login.chatClosed': '채팅 닫힘',
  'login.logout': '로그아웃',
};

// The server's errors (`{error, code}`) are English sentences; in another language the page says
// what the code means and keeps the server's sentence for English. A code missing here shows the
// server's sentence: better English than nothing.
const SERVER_ERRORS = {
  ko: {
    banned: '이 웨비나 채팅에서 차단되었습니다.',
    timed_out: '{time}까지 이 웨비나 채팅이 일시 차단되었습니다.',
    chat_closed: '채팅이 읽기 전용입니다. 호스트와 운영자만 글을 쓸 수 있습니다.',
    slow_mode: '슬로 모드가 켜져 있습니다.',
    rate_limited: '요청이 너무 많습니다. 잠시 후 다시 시도하세요.',
    forbidden: '이 작업을 할 권한이 없습니다.',
    not_found: '찾을 수 없습니다.',
    too_large: '요청이 너무 큽니다.',
    invalid_request: '입력한 내용이 올바르지 않습니다.',
    duplicate: '이미 보낸 내용입니다.',
    unauthorized: '세션이 만료되었습니다.',
    token_expired: '세션이 만료되었습니다.',
    invalid_token: '세션이 만료되었습니다.',
    token_reused: '보안을 위해 로그아웃되었습니다. 다시 로그인하세요.',
    invalid_credentials: '이메일 또는 비밀번호가 올바르지 않습니다.',
    internal: '서버 오류가 발생했습니다. 잠시 후 다시 시도하세요.',
  },
};

export const MESSAGES = Object.freeze({ en: EN, ko: KO });

const state = { lang: 'en', locale: DEFAULT_LOCALE.en };

/** The first supported language of a BCP-47 tag ('ko-KR' → 'ko'), or null. */
function supported(tag) {
  const base = typeof tag === 'string' ? tag.trim().toLowerCase().split(/[-_]/)[0] : '';
  return Object.hasOwn(LANGUAGES, base) ? base : null;
}

/**
 * The page's language: `param` (`?lang=`), else `stored` (the viewer's choice), else the first of
 * the browser's `languages` the page speaks, else English. Unknown values are skipped.
 */
export function chooseLanguage({ param = null, stored = null, languages = [] } = {}) {
  for (const candidate of [param, stored, ...languages]) {
    const lang = supported(candidate);
    if (lang) return lang;
  }
  return 'en';
}

/** The locale for times and dates: the browser's own tag of `lang` if it has one, else the usual. */
export function localeFor(lang, languages = []) {
  const own = languages.find((tag) => supported(tag) === lang && /^[a-z]{2,3}-/i.test(tag));
  if (own) {
    try {
      return Intl.getCanonicalLocales(own)[0];
    } catch {
      // a malformed tag: the language's usual locale
    }
  }
  return DEFAULT_LOCALE[lang];
}

export function setLanguage(lang, languages = []) {
  state.lang = Object.hasOwn(LANGUAGES, lang) ? lang : 'en';
  state.locale = localeFor(state.lang, languages);
}

/** The page's language code ('en' | 'ko'). */
export function language() {
  return state.lang;
}

/** The locale Intl formats use (e.g. 'en-GB', 'ko-KR'). */
export function locale() {
  return state.locale;
}

function fill(template, params) {
  return template.replace(/\{(\w+)\}/g, (whole, name) => (
    Object.hasOwn(params, name) ? String(params[name]) : whole));
}

/**
 * The text of `key` in the page's language, with `{name}` replaced from `params`; plural forms are
 * chosen by `params.count`. A key missing in the language falls back to English, then to the key.
 */
export function t(key, params = {}) {
  const value = MESSAGES[state.lang][key] ?? EN[key] ?? key;
  if (typeof value === 'string') return fill(value, params);
  const category = new Intl.PluralRules(state.lang).select(Number(params.count ?? 0));
  return fill(value[category] ?? value.other, params);
}

/** "10 s", "1 min", "24 h" (and "10초" …) for a duration in whole seconds. */
export function durationText(seconds) {
  if (seconds >= 3600 && seconds % 3600 === 0) return t('duration.h', { n: seconds / 3600 });
  if (seconds >= 60 && seconds % 60 === 0) return t('duration.min', { n: seconds / 60 });
  return t('duration.s', { n: seconds });
}

/** A time of day in the viewer's locale, with seconds (until when a timeout lasts). */
export function clockText(at) {
  return new Intl.DateTimeFormat(state.locale, { hour: '2-digit', minute: '2-digit',
    second: '2-digit', hourCycle: 'h23' }).format(at);
}

/**
 * The sentence for an error answer `{error, code, …}` of the server (a socket's error frame has
 * `message`), or of no server (`status` 0), in the page's language; English keeps the server's
 * own words. `fallback`: the text when the answer says nothing (else "Error 403" …).
 */
export function serverErrorText(body, status, fallback = null) {
  const code = body && typeof body.code === 'string' ? body.code : null;
  const said = body && (body.error || body.message);
  const own = typeof said === 'string' && said ? said : null;
  const known = code && SERVER_ERRORS[state.lang]?.[code];
  if (known) {
    const until = body.banned_until ? new Date(body.banned_until) : null;
    return fill(known, { time: until && !Number.isNaN(until.getTime()) ? clockText(until) : '' });
  }
  if (own) return own;
  if (fallback) return fallback;
  return status === 0 ? t('error.noConnection') : t('error.status', { status });
}

/** The viewer's choice from the language menu: kept in this browser, and in the URL if it had one. */
export function rememberLanguage(lang, { storage, location, history } = {}) {
  try {
    storage?.setItem(LANGUAGE_STORAGE_KEY, lang);
  } catch {
    // private mode or storage full: the URL still carries it below
  }
  const url = new URL(location.href);
  if (url.searchParams.has('lang') || !storage) url.searchParams.set('lang', lang);
  history?.replaceState(history.state, '', url.pathname + url.search + url.hash);
}

/** The language menu of a page (`<select>`): the current language selected; a change reloads. */
export function languageSelect(doc, win) {
  const select = doc.createElement('select');
  select.className = 'select language-select';
  select.id = 'language';
  select.setAttribute('aria-label', t('language.label'));
  select.title = t('language.label');
  for (const [code, name] of Object.entries(LANGUAGES)) {
    const option = doc.createElement('option');
    option.value = code;
    option.lang = code;
    option.textContent = name;
    select.append(option);
  }
  select.value = state.lang;
  select.addEventListener('change', () => {
    rememberLanguage(select.value, { storage: win.localStorage, location: win.location,
      history: win.history });
    // A reload renders every text again; the outbox and the session are in storage.
    win.location.reload();
  });
  return select;
}

function detect() {
  const params = new URLSearchParams(window.location.search);
  let stored = null;
  try {
    stored = window.localStorage.getItem(LANGUAGE_STORAGE_KEY);
  } catch {
    stored = null;
  }
  const languages = [...(navigator.languages || []), navigator.language].filter(Boolean);
  setLanguage(chooseLanguage({ param: params.get('lang'), stored, languages }), languages);
  document.documentElement.lang = state.lang;
}

if (typeof window !== 'undefined' && typeof document !== 'undefined') detect();
