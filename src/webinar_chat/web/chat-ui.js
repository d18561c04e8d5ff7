// The chat page (`/webinars/{id}`): builds the view, renders the client's state, and forwards the
// browser's events (online/offline, visibility, other tabs' log-ins) to it. User text only ever
// reaches the page through `textContent`. The logic lives in chat-client.js (docs/client.md).

import { AuthSession } from './auth.js';
import { ChatRuntime, MAX_MESSAGE_LENGTH, readConfig, safeNextPath } from './chat-client.js';
import { newClientMsgId } from './chat-core.js';
import { Monitor, createLogger } from './monitor.js';

const STATUS_TEXT = {
  live: ['Live', 'Connected: new messages arrive instantly.'],
  reconnecting: ['Reconnecting…', 'The live connection dropped; trying again.'],
  fallback: ['Fallback', 'The live connection is blocked or unstable: messages arrive by polling '
    + 'every few seconds. Sending works normally.'],
  offline: ['Offline', 'You are offline. Messages you write are kept and sent when you are back.'],
};
const STATE_TEXT = {
  sending: 'Sending…',
  pending: 'Not sent yet · retrying',
  failed: 'Not sent',
};
// Scrolled closer than this to the bottom counts as "reading the latest": new messages follow.
const STICK_TO_BOTTOM_PX = 80;
// A delete must be confirmed within this time (a second click), never with a blocking dialog.
const CONFIRM_MS = 4000;

/** `h('div', {className: 'x'}, child, 'text')` — a tiny element builder; strings become text. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('aria-') || key === 'role' || key === 'for') el.setAttribute(key, value);
    else el[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return el;
}

function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
  return ((parts[0]?.[0] || '?') + (parts.length > 1 ? parts[parts.length - 1][0] : '')).toUpperCase();
}

// A stable hue per author, so a busy chat is easier to scan.
function hue(seed) {
  let x = 0;
  for (const c of String(seed)) x = (x * 31 + c.charCodeAt(0)) >>> 0;
  return Math.round((x * 137.508) % 360); // the golden angle spreads neighbouring ids apart
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

function timeOf(iso) {
  const d = iso ? new Date(iso) : new Date();
  return Number.isNaN(d.getTime()) ? null : d;
}

/**
 * Show the chat of `webinarId` inside `root`. Mounting the same webinar twice shares one
 * ChatClient and one socket subscription (ChatRuntime.acquire). Returns {unmount}.
 */
export function mountChat(root, { runtime, webinarId, onAuthLost }) {
  const client = runtime.acquire(webinarId);
  const config = runtime.config;
  const me = () => client.user;
  const nodes = new Map(); // render key → <li>
  const confirmTimers = new Map();
  let cooldownTimer = null;
  let unreadBelow = 0;

  // --- the skeleton ----------------------------------------------------------------------------
  const title = h('h1', { className: 'chat-title' }, 'Loading chat…');
  const subtitle = h('p', { className: 'chat-subtitle' });
  const statusDot = h('span', { className: 'status-dot', 'aria-hidden': 'true' });
  const statusText = h('span', { className: 'status-text' }, 'Connecting…');
  const status = h('div', { className: 'status', id: 'status', role: 'status',
    dataset: { status: 'reconnecting' }, title: STATUS_TEXT.reconnecting[1] }, statusDot, statusText);
  const who = h('span', { className: 'who' });
  const logout = h('button', { className: 'button ghost small', type: 'button' }, 'Log out');
  const header = h('header', { className: 'chat-header' },
    h('div', { className: 'chat-heading' }, title, subtitle),
    h('div', { className: 'chat-tools' }, status, who, logout));

  const banner = h('div', { className: 'banner', role: 'alert', hidden: true });
  const earlier = h('button', { className: 'button ghost small load-earlier', type: 'button',
    hidden: true }, 'Load earlier messages');
  const empty = h('div', { className: 'empty', hidden: true },
    h('p', { className: 'empty-title' }, 'No messages yet'),
    h('p', { className: 'muted' }, 'Say hello — everyone in the webinar will see it.'));
  const list = h('ol', { className: 'messages', id: 'messages', role: 'log',
    'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': 'Chat messages' });
  const scroller = h('div', { className: 'scroller', tabIndex: 0 }, earlier, empty, list);
  const jump = h('button', { className: 'jump', type: 'button', hidden: true }, 'New messages ↓');

  const input = h('textarea', { id: 'message-input', className: 'composer-input', rows: 1,
    maxLength: MAX_MESSAGE_LENGTH, placeholder: 'Write a message…', autocomplete: 'off',
    disabled: true, 'aria-describedby': 'composer-hint composer-error' });
  const sendButton = h('button', { id: 'send-button', className: 'button primary send',
    type: 'submit', disabled: true }, 'Send');
  const counter = h('span', { className: 'counter', 'aria-hidden': 'true' });
  const hint = h('span', { id: 'composer-hint', className: 'composer-hint' },
    'Enter to send · Shift+Enter for a new line');
  const error = h('p', { id: 'composer-error', className: 'composer-error', role: 'alert',
    hidden: true });
  const form = h('form', { className: 'composer', id: 'composer', noValidate: true },
    h('label', { for: 'message-input', className: 'visually-hidden' }, 'Message'),
    h('div', { className: 'composer-row' }, input, sendButton),
    h('div', { className: 'composer-meta' }, hint, counter),
    error);

  const panel = h('section', { className: 'chat-panel', 'aria-label': 'Webinar chat' },
    header, banner, h('div', { className: 'timeline' }, scroller, jump), form);
  root.replaceChildren(panel);

  // --- rendering ---------------------------------------------------------------------------------
  function renderHeader() {
    const w = client.webinar;
    if (!w) return;
    title.textContent = w.title;
    document.title = `${w.title} · webinar-chat`;
    const bits = [];
    if (!w.chat_open) bits.push('Chat closed');
    if (w.slow_mode_seconds > 0) bits.push(`Slow mode: one message every ${w.slow_mode_seconds} s`);
    subtitle.textContent = bits.join(' · ');
    subtitle.hidden = bits.length === 0;
    const user = me();
    who.textContent = user ? `${user.display_name}${client.staff ? ` · ${client.role}` : ''}` : '';
    const canPost = w.chat_open || client.staff;
    input.disabled = !canPost;
    sendButton.disabled = !canPost;
    input.placeholder = canPost ? 'Write a message…' : 'The chat is closed';
    root.dataset.role = client.role || '';
    root.dataset.ready = '1';
  }

  function renderStatus() {
    const s = client.status;
    status.dataset.status = s;
    statusText.textContent = STATUS_TEXT[s][0];
    status.title = STATUS_TEXT[s][1];
  }

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < STICK_TO_BOTTOM_PX;
  }

  function signature(item) {
    if (item.kind === 'local') return `l|${item.entry.state}|${item.entry.error}`;
    const m = item.message;
    return `s|${m.seq}|${m.hidden}|${m.content}`;
  }

  function buildMessage(item) {
    const li = h('li', { className: 'msg' });
    li.append(
      h('div', { className: 'avatar', 'aria-hidden': 'true' }),
      h('div', { className: 'msg-body' },
        h('div', { className: 'msg-meta' },
          h('span', { className: 'author' }),
          h('time', { className: 'time' }),
          h('span', { className: 'hidden-badge', hidden: true }, 'Hidden from attendees'),
          h('span', { className: 'msg-state' })),
        h('p', { className: 'content' }),
        h('div', { className: 'msg-actions' })));
    fillMessage(li, item);
    return li;
  }

  function fillMessage(li, item) {
    const user = me();
    const local = item.kind === 'local';
    const m = local ? null : item.message;
    const own = local || (user && m.user_id === user.id);
    const author = local ? (user?.display_name || 'You') : (m.user?.display_name || 'Unknown');
    const state = local ? item.entry.state : 'sent';
    li.dataset.key = item.key;
    li.dataset.state = state;
    li.dataset.own = own ? 'true' : 'false';
    li.dataset.hidden = m && m.hidden ? 'true' : 'false';
    if (m) li.dataset.id = String(m.id);
    else delete li.dataset.id;
    li.dataset.clientMsgId = local ? item.entry.client_msg_id : (m.client_msg_id || '');
    const avatar = li.querySelector('.avatar');
    avatar.textContent = initials(author);
    avatar.style.setProperty('--hue', String(hue(local ? user?.id : m.user_id)));
    li.querySelector('.author').textContent = own ? `${author} (you)` : author;
    const when = timeOf(local ? item.entry.created_at : m.created_at);
    const time = li.querySelector('.time');
    time.textContent = when ? timeFormat.format(when) : '';
    time.dateTime = when ? when.toISOString() : '';
    time.title = when ? fullFormat.format(when) : '';
    li.querySelector('.hidden-badge').hidden = !(m && m.hidden);
    const stateEl = li.querySelector('.msg-state');
    stateEl.textContent = local ? (STATE_TEXT[state] || '') : '';
    stateEl.title = local && item.entry.error ? item.entry.error : '';
    // The one place user text meets the page: textContent, never HTML.
    li.querySelector('.content').textContent = local ? item.entry.content : (m.content ?? '');
    const actions = li.querySelector('.msg-actions');
    actions.replaceChildren();
    if (local && state === 'failed') {
      if (item.entry.error) actions.append(h('span', { className: 'failed-reason' }, item.entry.error));
      actions.append(
        h('button', { type: 'button', className: 'link-button', dataset: { action: 'retry' } },
          'Retry'),
        h('button', { type: 'button', className: 'link-button muted', dataset: { action: 'discard' } },
          'Discard'));
    } else if (!local) {
      if (client.staff) {
        actions.append(h('button', { type: 'button', className: 'link-button',
          dataset: { action: m.hidden ? 'unhide' : 'hide' } }, m.hidden ? 'Unhide' : 'Hide'));
      }
      if (client.staff || own) {
        actions.append(h('button', { type: 'button', className: 'link-button danger',
          dataset: { action: 'delete' } }, 'Delete'));
      }
    }
  }

  function renderTimeline({ stick = false, prepended = 0 } = {}) {
    const items = client.timeline.items();
    const follow = stick || nearBottom();
    const heightBefore = scroller.scrollHeight;
    const topBefore = scroller.scrollTop;
    // An optimistic message that got stored keeps its element (no flicker, no re-announcement).
    for (const item of items) {
      const cmid = item.kind === 'server' && item.message.client_msg_id;
      const temp = cmid && `temp-${cmid}`;
      if (temp && !nodes.has(item.key) && nodes.has(temp)) {
        nodes.set(item.key, nodes.get(temp));
        nodes.delete(temp);
      }
    }
    const wanted = new Set(items.map((i) => i.key));
    for (const [key, el] of nodes) {
      if (!wanted.has(key)) {
        el.remove();
        nodes.delete(key);
      }
    }
    let previous = null;
    let added = 0;
    for (const item of items) {
      let el = nodes.get(item.key);
      const sig = signature(item);
      if (!el) {
        el = buildMessage(item);
        nodes.set(item.key, el);
        added += 1;
      } else if (el.sig !== sig) {
        fillMessage(el, item);
      }
      el.sig = sig;
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (el !== expected) list.insertBefore(el, expected);
      previous = el;
    }
    empty.hidden = items.length > 0 || !client.webinar;
    earlier.hidden = !client.hasMoreHistory;
    if (prepended) {
      scroller.scrollTop = topBefore + (scroller.scrollHeight - heightBefore);
    } else if (follow) {
      scroller.scrollTop = scroller.scrollHeight;
      unreadBelow = 0;
    } else if (added) {
      unreadBelow += added;
    }
    jump.hidden = unreadBelow === 0;
    jump.textContent = unreadBelow === 1 ? '1 new message ↓' : `${unreadBelow} new messages ↓`;
  }

  function showError(text) {
    error.textContent = text || '';
    error.hidden = !text;
  }

  function showBanner(kind, ...children) {
    banner.className = `banner banner-${kind}`;
    banner.replaceChildren(...children);
    banner.hidden = children.length === 0;
  }

  function updateCounter() {
    const left = MAX_MESSAGE_LENGTH - input.value.length;
    counter.textContent = left <= 200 ? `${left}` : '';
    counter.classList.toggle('counter-low', left <= 50);
  }

  function autosize() {
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  }

  // --- sending -----------------------------------------------------------------------------------
  function submit() {
    if (input.disabled) return;
    const result = client.send(input.value);
    if (!result.ok) {
      if (result.error) showError(result.error);
      return;
    }
    showError('');
    input.value = '';
    updateCounter();
    autosize();
    // One click is one message: the button rests for a moment after every send.
    sendButton.disabled = true;
    if (cooldownTimer !== null) clearTimeout(cooldownTimer);
    cooldownTimer = setTimeout(() => {
      cooldownTimer = null;
      sendButton.disabled = input.disabled;
    }, config.sendCooldownMs);
    renderTimeline({ stick: true });
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener('keydown', (event) => {
    if (event.key !== 'Enter' || event.shiftKey || event.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    if (!event.repeat) submit();
  });
  input.addEventListener('input', () => {
    if (!error.hidden) showError('');
    updateCounter();
    autosize();
  });

  // --- message actions ---------------------------------------------------------------------------
  list.addEventListener('click', async (event) => {
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    const li = button.closest('li.msg');
    const action = button.dataset.action;
    if (action === 'retry') client.retry(li.dataset.clientMsgId);
    else if (action === 'discard') client.discard(li.dataset.clientMsgId);
    else if (action === 'hide' || action === 'unhide') {
      button.disabled = true;
      await client.setHidden(Number(li.dataset.id), action === 'hide');
      button.disabled = false;
    } else if (action === 'delete') {
      if (button.dataset.confirm !== 'yes') {
        button.dataset.confirm = 'yes';
        button.textContent = 'Confirm delete';
        confirmTimers.set(button, setTimeout(() => {
          delete button.dataset.confirm;
          button.textContent = 'Delete';
        }, CONFIRM_MS));
        return;
      }
      clearTimeout(confirmTimers.get(button));
      button.disabled = true;
      const r = await client.deleteMessage(Number(li.dataset.id));
      if (!r.ok) button.disabled = false;
    }
  });

  earlier.addEventListener('click', async () => {
    earlier.disabled = true;
    const added = await client.loadEarlier();
    earlier.disabled = false;
    renderTimeline({ prepended: added });
  });
  scroller.addEventListener('scroll', () => {
    if (unreadBelow && nearBottom()) {
      unreadBelow = 0;
      jump.hidden = true;
    }
  });
  jump.addEventListener('click', () => {
    scroller.scrollTop = scroller.scrollHeight;
    unreadBelow = 0;
    jump.hidden = true;
  });
  logout.addEventListener('click', async () => {
    const refreshToken = runtime.auth.data?.refresh_token;
    runtime.auth.clear();
    if (refreshToken) {
      await runtime.auth.api('POST', '/api/auth/logout', { body: { refresh_token: refreshToken },
        auth: false });
    }
    window.location.assign('/');
  });

  // --- client notifications ---------------------------------------------------------------------
  const off = client.subscribe((event) => {
    switch (event.type) {
      case 'webinar':
        renderHeader();
        break;
      case 'timeline':
        renderTimeline({ prepended: event.prepended || 0 });
        break;
      case 'status':
        renderStatus();
        break;
      case 'rejected':
        if (!input.value.trim()) {
          input.value = event.content;
          updateCounter();
          autosize();
        }
        showError(event.retryAfterS
          ? `${event.error} You can send again in ${event.retryAfterS} s.` : event.error);
        input.focus();
        break;
      case 'notice':
        showBanner(event.level === 'error' ? 'error' : 'info', event.text);
        setTimeout(() => showBanner('info'), 6000);
        break;
      case 'auth_lost': {
        onAuthLost?.();
        const next = safeNextPath(window.location.pathname + window.location.search) || '';
        showBanner('error', 'Your session has ended. Unsent messages are kept. ',
          h('a', { href: `/?next=${encodeURIComponent(next)}` }, 'Log in again'));
        break;
      }
      case 'fatal':
        input.disabled = true;
        sendButton.disabled = true;
        showBanner('error', `This chat is not available: ${event.error} `,
          h('a', { href: '/?list=1' }, 'Back to your webinars'));
        break;
      default:
        break;
    }
  });

  renderStatus();
  renderTimeline();
  if (client.webinar) renderHeader();
  updateCounter();
  input.focus();

  return {
    client,
    unmount() {
      off();
      if (cooldownTimer !== null) clearTimeout(cooldownTimer);
      for (const t of confirmTimers.values()) clearTimeout(t);
      root.replaceChildren();
      runtime.release(webinarId);
    },
  };
}

function realtimeUrl() {
  const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${window.location.host}/realtime`;
}

function main() {
  const match = /^\/webinars\/(\d{1,18})\/?$/.exec(window.location.pathname);
  const root = document.getElementById('chat-root');
  if (!match || !root) return;
  const webinarId = Number(match[1]);
  const config = readConfig(new URLSearchParams(window.location.search));
  const logger = createLogger({ level: config.logLevel });
  const auth = new AuthSession({ logger });
  if (!auth.loggedIn) {
    const next = safeNextPath(window.location.pathname + window.location.search) || '';
    window.location.replace(`/?next=${encodeURIComponent(next)}`);
    return;
  }
  // One monitoring session per page load: the server's per-session rate limit and reconnect
  // maximum key on it.
  const sessionId = newClientMsgId();
  const monitor = new Monitor({
    logger,
    flushMs: config.metricsFlushMs,
    send: async (events, { keepalive }) => (await auth.api('POST', '/api/metrics/events',
      { body: { sessionId, events }, keepalive })).status,
  });
  const runtime = new ChatRuntime({ auth, monitor, logger, config, realtimeUrl: realtimeUrl() });
  mountChat(root, { runtime, webinarId, onAuthLost: () => auth.clear() });

  window.addEventListener('online', () => runtime.online());
  window.addEventListener('offline', () => runtime.offline());
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') runtime.visible();
    else monitor.flush({ keepalive: true });
  });
  window.addEventListener('storage', (event) => {
    if (event.key === 'webinar-chat:session') auth.reload();
  });
  window.addEventListener('pagehide', () => monitor.flush({ keepalive: true }));
  auth.scheduleRefresh();
}

main();
