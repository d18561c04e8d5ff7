// The chat page (`/webinars/{id}`): builds the view, renders the client's state, and forwards the
// browser's events (online/offline, visibility, other tabs' log-ins) to it. User text only ever
// reaches the page through `textContent`. The logic lives in chat-client.js (docs/client.md).

import { AuthSession } from './auth.js';
import { ChatRuntime, MAX_MESSAGE_LENGTH, readConfig, safeNextPath } from './chat-client.js';
import {
  SLOW_MODE_CHOICES, composerState, dayLabel, localStateLabel, messageActions, newClientMsgId,
  timelineLayout,
} from './chat-core.js';
import { TIMEOUT_CHOICES } from './chat-core.js';
import { clockText, durationText, languageSelect, locale, t } from './i18n.js';
import { Monitor, createLogger } from './monitor.js';
import { mountQa } from './qa-ui.js';

// A status's label says what it means to a person (`status.<s>`); the technical word (fallback,
// long-polling) is left to its tooltip (`status.<s>.tip`) and the debug log.
const statusText = (s) => t(`status.${s}`);
const statusTip = (s) => t(`status.${s}.tip`);
// "Time out…" opens these in the same menu (`timeout-<seconds>`).
const TIMEOUT_ACTIONS = TIMEOUT_CHOICES.map((seconds) => `timeout-${seconds}`);

function menuText(action) {
  if (action.startsWith('timeout-')) {
    return t('menu.timeoutFor', { duration: durationText(Number(action.slice(8))) });
  }
  return t(`menu.${action}`);
}
const DANGER_ACTIONS = new Set(['delete', 'ban']);

/** The banner text of a ban (chat-client's `ban`): until when, or permanent. */
export function banText(ban) {
  return ban.until === null ? t('ban.banned') : t('ban.timedOut', { time: clockText(ban.until) });
}
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

// In the viewer's locale (i18n.js, decided when the page loads).
const timeFormat = new Intl.DateTimeFormat(locale(), { hour: '2-digit', minute: '2-digit' });
const fullFormat = new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'medium' });
const dayFormat = new Intl.DateTimeFormat(locale(), { weekday: 'long', month: 'long',
  day: 'numeric' });
const dayYearFormat = new Intl.DateTimeFormat(locale(), { weekday: 'long', month: 'long',
  day: 'numeric', year: 'numeric' });

// A separator names the year only when it is not this year's.
function formatDay(at) {
  const sameYear = new Date(at).getFullYear() === new Date().getFullYear();
  return (sameYear ? dayFormat : dayYearFormat).format(at);
}

function msUntilNextDay(now = new Date()) {
  return new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1).getTime() - now.getTime();
}

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
  const days = new Map(); // 'YYYY-MM-DD' → the day separator's <li>
  const confirmTimers = new Map();
  const busy = new Set(); // message ids with a moderation call in flight
  let cooldownTimer = null;
  let dayTimer = null;
  let unreadBelow = 0;

  // --- the skeleton ----------------------------------------------------------------------------
  const title = h('h1', { className: 'chat-title' }, t('header.loading'));
  const subtitle = h('p', { className: 'chat-subtitle' });
  const statusDot = h('span', { className: 'status-dot', 'aria-hidden': 'true' });
  const statusLabel = h('span', { className: 'status-text' }, statusText('connecting'));
  const status = h('div', { className: 'status', id: 'status', role: 'status',
    dataset: { status: 'connecting' }, title: statusTip('connecting') }, statusDot, statusLabel);
  // Chat settings (staff): the mode and slow mode for hosts, the announcement for moderators too.
  const settingsButton = h('button', { className: 'button ghost small settings-button',
    type: 'button', hidden: true, 'aria-expanded': 'false', 'aria-controls': 'chat-settings' },
  t('settings.button'));
  const modeSelect = h('select', { id: 'chat-mode', className: 'select' },
    ...['everyone', 'hosts_only', 'read_only'].map((mode) => h('option', { value: mode },
      t(`settings.mode.${mode}`))));
  const slowSelect = h('select', { id: 'slow-mode', className: 'select' },
    ...SLOW_MODE_CHOICES.map((sec) => h('option', { value: String(sec) },
      sec === 0 ? t('settings.slowOff') : durationText(sec))));
  const pinInput = h('textarea', { id: 'pin-input', className: 'pin-input', rows: 2,
    maxLength: MAX_MESSAGE_LENGTH, placeholder: t('settings.pinPlaceholder') });
  const pinButton = h('button', { className: 'button primary small', type: 'button',
    id: 'pin-button' }, t('settings.pin'));
  const hostOnly = h('div', { className: 'settings-row host-only' },
    h('label', { for: 'chat-mode' }, t('settings.whoCanChat')), modeSelect,
    h('label', { for: 'slow-mode' }, t('settings.slowMode')), slowSelect);
  const exportCsv = h('button', { className: 'link-button small', type: 'button',
    id: 'export-csv' }, 'CSV');
  const exportJson = h('button', { className: 'link-button small', type: 'button',
    id: 'export-json' }, 'JSON');
  const settings = h('section', { className: 'chat-settings', id: 'chat-settings', hidden: true,
    'aria-label': t('settings.label') },
  hostOnly,
  h('div', { className: 'settings-row' },
    h('span', { className: 'settings-label' }, t('settings.transcript')), exportCsv, exportJson),
  h('div', { className: 'settings-row' },
    h('label', { for: 'pin-input' }, t('settings.announcement')), pinInput, pinButton));

  const who = h('span', { className: 'who' });
  // Presence: how many are connected now, by socket or long-poll — a number, never who
  // (docs/webinar-features.md, "Presence"). A narrow header keeps the icon and the number.
  const presence = h('span', { className: 'presence', id: 'presence', role: 'img', hidden: true });
  const logout = h('button', { className: 'button ghost small', type: 'button' },
    t('header.logout'));
  // The language menu sits beside the title: on a phone or a side panel the title row has room
  // for it, the row of tools has none.
  const header = h('header', { className: 'chat-header' },
    h('div', { className: 'chat-heading' }, title, subtitle),
    languageSelect(document, window),
    h('div', { className: 'chat-tools' }, status, presence, who, settingsButton, logout));

  const banner = h('div', { className: 'banner', id: 'notice-banner', role: 'alert', hidden: true });

  // The pinned announcement, above the list for everyone; staff can unpin it here.
  const pinnedText = h('p', { className: 'pinned-text' });
  const unpin = h('button', { className: 'link-button small unpin', type: 'button', hidden: true },
    t('pinned.unpin'));
  const pinned = h('aside', { className: 'pinned', id: 'pinned', hidden: true,
    'aria-label': t('pinned.aria') },
  h('span', { className: 'pinned-label' }, t('pinned.label')), pinnedText, unpin);

  const earlier = h('button', { className: 'button ghost small load-earlier', type: 'button',
    hidden: true }, t('timeline.earlier'));
  const empty = h('div', { className: 'empty', hidden: true },
    h('p', { className: 'empty-title' }, t('timeline.emptyTitle')),
    h('p', { className: 'muted' }, t('timeline.emptyHint')));
  const list = h('ol', { className: 'messages', id: 'messages', role: 'log',
    'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': t('timeline.label') });
  const scroller = h('div', { className: 'scroller', tabIndex: 0 }, earlier, empty, list);
  const jump = h('button', { className: 'jump', type: 'button', hidden: true });

  const input = h('textarea', { id: 'message-input', className: 'composer-input', rows: 1,
    maxLength: MAX_MESSAGE_LENGTH, placeholder: t('composer.placeholder'), autocomplete: 'off',
    disabled: true, 'aria-describedby': 'composer-hint composer-error' });
  const sendButton = h('button', { id: 'send-button', className: 'button primary send',
    type: 'submit', disabled: true }, t('composer.send'));
  const counter = h('span', { className: 'counter', 'aria-hidden': 'true' });
  const hint = h('span', { id: 'composer-hint', className: 'composer-hint' },
    t('composer.hint'));
  const error = h('p', { id: 'composer-error', className: 'composer-error', role: 'alert',
    hidden: true });
  const form = h('form', { className: 'composer', id: 'composer', noValidate: true },
    h('label', { for: 'message-input', className: 'visually-hidden' }, t('composer.label')),
    h('div', { className: 'composer-row' }, input, sendButton),
    h('div', { className: 'composer-meta' }, hint, counter),
    error);

  const panel = h('section', { className: 'chat-panel', 'aria-label': t('panel.label') },
    header, settings, banner, pinned, h('div', { className: 'timeline' }, scroller, jump), form);
  root.replaceChildren(panel);
  // Its own banner: a notice must not clear it (docs/webinar-features.md, "Timeouts and bans").
  const banBanner = h('div', { className: 'banner banner-error ban-banner', id: 'ban-banner',
    role: 'alert', hidden: true });
  banner.after(banBanner);
  // The Q&A tab beside the chat (qa-ui.js): its tabs under the pinned announcement; its view
  // takes the place of the timeline and the composer while selected.
  const qa = mountQa({ client, panel, after: pinned, chatParts: [scroller.parentElement, form] });

  // --- rendering ---------------------------------------------------------------------------------
  function renderHeader() {
    const w = client.webinar;
    if (!w) return;
    title.textContent = w.title;
    title.title = w.title; // the whole title, where a narrow header has to cut it
    document.title = `${w.title} · webinar-chat`;
    const bits = [];
    if (w.chat_mode === 'read_only') bits.push(t('header.readOnly'));
    if (w.chat_mode === 'hosts_only') bits.push(t('header.hostsOnly'));
    if (w.slow_mode_seconds > 0) bits.push(t('header.slowMode', { n: w.slow_mode_seconds }));
    subtitle.textContent = bits.join(' · ');
    subtitle.hidden = bits.length === 0;
    root.dataset.chatMode = w.chat_mode || '';
    renderPinned(w);
    renderSettings(w);
    const user = me();
    // The role is a separate span: a narrow header drops it before it cuts the name.
    who.replaceChildren(...(user ? [user.display_name] : []),
      ...(user && client.staff ? [h('span', { className: 'who-role' },
        ` · ${t(`role.${client.role}`)}`)] : []));
    who.title = user ? t('header.signedInAs', { name: who.textContent }) : '';
    const composer = composerState(w, { staff: client.staff });
    const canPost = composer.canPost && !client.ban;
    input.disabled = !canPost;
    sendButton.disabled = !canPost || slowUntil > Date.now();
    input.placeholder = t(!composer.canPost ? 'composer.placeholderReadOnly'
      : composer.reason === 'hosts_only' ? 'composer.placeholderHostsOnly'
        : 'composer.placeholder');
    root.dataset.role = client.role || '';
    root.dataset.ready = '1';
  }

  function renderPresence() {
    const count = client.presence;
    presence.hidden = !Number.isInteger(count);
    if (presence.hidden) return;
    presence.setAttribute('aria-label', t('presence.people', { count }));
    presence.title = t('presence.now', { count });
    presence.replaceChildren(peopleIcon(), `${count}`,
      h('span', { className: 'presence-word' }, t('presence.word')));
  }

  /** Two people (an inline SVG, not the 👥 emoji: many kiosk and Linux fonts have none). */
  function peopleIcon() {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    for (const [k, v] of Object.entries({ viewBox: '0 0 24 24', width: '14', height: '14',
      fill: 'currentColor', 'aria-hidden': 'true', focusable: 'false', class: 'presence-icon' })) {
      svg.setAttribute(k, v);
    }
    const path = document.createElementNS(ns, 'path');
    path.setAttribute('d', 'M9 11a3.5 3.5 0 1 0 0-7 3.5 3.5 0 0 0 0 7Zm0 2c-3.3 0-7 1.6-7 4.2V20h14'
      + 'v-2.8C16 14.6 12.3 13 9 13Zm7.5-2a3 3 0 1 0-1.2-5.8 5.4 5.4 0 0 1 0 5.6c.4.1.8.2 1.2.2Zm1.3'
      + ' 2.2A5.6 5.6 0 0 1 18 17.2V20h4v-2.6c0-2.1-2-3.6-4.2-4.2Z');
    svg.append(path);
    return svg;
  }

  function renderPinned(w) {
    const text = w.pinned ? w.pinned.content : '';
    pinned.hidden = !text;
    pinnedText.textContent = text;
    const at = w.pinned && timeOf(w.pinned.pinned_at);
    pinned.title = at ? t('pinned.when', { when: fullFormat.format(at) }) : '';
    unpin.hidden = !text || !client.staff;
  }

  function renderSettings(w) {
    settingsButton.hidden = !client.staff;
    hostOnly.hidden = client.role !== 'host';
    if (document.activeElement !== modeSelect) modeSelect.value = w.chat_mode || 'everyone';
    if (document.activeElement !== slowSelect) {
      const value = String(w.slow_mode_seconds || 0);
      if (![...slowSelect.options].some((o) => o.value === value)) {
        slowSelect.append(h('option', { value }, durationText(Number(value)))); // set by the API
      }
      slowSelect.value = value;
    }
  }

  // --- slow mode: the send button counts down the seconds left -----------------------------------
  let slowUntil = 0;
  let slowTimer = null;

  function startSlowCountdown(seconds) {
    slowUntil = Math.max(slowUntil, Date.now() + seconds * 1000);
    tickSlowCountdown();
  }

  function tickSlowCountdown() {
    if (slowTimer !== null) clearTimeout(slowTimer);
    slowTimer = null;
    const left = Math.ceil((slowUntil - Date.now()) / 1000);
    if (left > 0) {
      sendButton.textContent = t('composer.wait', { n: left });
      sendButton.disabled = true;
      sendButton.dataset.wait = String(left);
      slowTimer = setTimeout(tickSlowCountdown, Math.min(1000, slowUntil - Date.now()));
      return;
    }
    slowUntil = 0;
    sendButton.textContent = t('composer.send');
    delete sendButton.dataset.wait;
    sendButton.disabled = input.disabled || cooldownTimer !== null;
  }

  function renderStatus() {
    const s = client.status;
    status.dataset.status = s;
    statusLabel.textContent = statusText(s);
    status.title = statusTip(s);
  }

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < STICK_TO_BOTTOM_PX;
  }

  function signature(item) {
    if (item.kind === 'local') {
      return `l|${item.entry.state}|${item.entry.error}|${client.status === 'offline'}`;
    }
    const m = item.message;
    return `s|${m.seq}|${m.hidden}|${m.visibility}|${m.content}|${client.staff && client.isBanned(m.user_id)}`;
  }

  function buildMessage(item) {
    const li = h('li', { className: 'msg' });
    li.append(
      h('div', { className: 'avatar', 'aria-hidden': 'true' }),
      h('div', { className: 'msg-body' },
        h('div', { className: 'msg-meta' },
          h('span', { className: 'author' }),
          h('span', { className: 'role-badge', hidden: true }),
          h('time', { className: 'time' }),
          h('span', { className: 'hidden-badge', hidden: true }, t('message.hidden')),
          h('span', { className: 'staff-only-badge', hidden: true }, t('message.staffOnly')),
          h('span', { className: 'msg-state' })),
        h('p', { className: 'content' }),
        h('div', { className: 'msg-actions' })),
      // Always shown (not only on hover): reachable by Tab, discoverable, usable on touch.
      h('button', { type: 'button', className: 'msg-menu-button', hidden: true,
        'aria-label': t('menu.label'), 'aria-haspopup': 'menu', 'aria-expanded': 'false' },
      '⋯'));
    fillMessage(li, item);
    return li;
  }

  function fillMessage(li, item) {
    const user = me();
    const local = item.kind === 'local';
    const m = local ? null : item.message;
    const own = local || (user && m.user_id === user.id);
    const author = local ? (user?.display_name || t('message.you'))
      : (m.user?.display_name || t('message.unknownAuthor'));
    const state = local ? item.entry.state : 'sent';
    li.dataset.key = item.key;
    li.renderKey = item.key;
    li.dataset.state = state;
    li.dataset.own = own ? 'true' : 'false';
    li.dataset.hidden = m && m.hidden ? 'true' : 'false';
    if (m) li.dataset.id = String(m.id);
    else delete li.dataset.id;
    li.dataset.clientMsgId = local ? item.entry.client_msg_id : (m.client_msg_id || '');
    const avatar = li.querySelector('.avatar');
    avatar.textContent = initials(author);
    avatar.style.setProperty('--hue', String(hue(local ? user?.id : m.user_id)));
    li.querySelector('.author').textContent = own ? t('message.yours', { name: author }) : author;
    // The author's role when they posted (the server stores it with the message): the same
    // badge on every path and after any reload.
    const badge = li.querySelector('.role-badge');
    const role = m?.user?.role;
    badge.hidden = role !== 'host' && role !== 'moderator';
    badge.textContent = badge.hidden ? '' : t(`badge.${role}`);
    li.dataset.role = role || '';
    const when = timeOf(local ? item.entry.created_at : m.created_at);
    const time = li.querySelector('.time');
    time.textContent = when ? timeFormat.format(when) : '';
    time.dateTime = when ? when.toISOString() : '';
    time.title = when ? fullFormat.format(when) : '';
    li.querySelector('.hidden-badge').hidden = !(m && m.hidden);
    li.querySelector('.staff-only-badge').hidden = !(m && m.visibility === 'staff');
    li.dataset.visibility = (m && m.visibility) || 'everyone';
    const stateEl = li.querySelector('.msg-state');
    stateEl.textContent = local ? localStateLabel(state, { online: client.status !== 'offline' })
      : '';
    stateEl.title = local && item.entry.error ? item.entry.error : '';
    // The one place user text meets the page: textContent, never HTML.
    const content = li.querySelector('.content');
    content.textContent = local ? item.entry.content : (m.content ?? '');
    content.id = `content-${item.key}`;
    const menuActions = messageActions({ kind: item.kind, staff: client.staff, own,
      hidden: Boolean(m && m.hidden),
      bannable: Boolean(m && !own && (m.user?.role || 'attendee') === 'attendee'),
      authorBanned: Boolean(m && client.staff && client.isBanned(m.user_id)) });
    li.menuActions = menuActions;
    li.dataset.menu = menuActions.length > 0 ? 'true' : 'false';
    const menuButton = li.querySelector('.msg-menu-button');
    menuButton.hidden = menuActions.length === 0;
    menuButton.setAttribute('aria-describedby', content.id);
    if (menuFor === li) refreshMenu();
    const actions = li.querySelector('.msg-actions');
    actions.replaceChildren();
    if (local && state === 'failed') {
      if (item.entry.error) actions.append(h('span', { className: 'failed-reason' }, item.entry.error));
      actions.append(
        h('button', { type: 'button', className: 'link-button', dataset: { action: 'retry' } },
          t('message.retry')),
        h('button', { type: 'button', className: 'link-button muted', dataset: { action: 'discard' } },
          t('message.discard')));
    }
  }

  // --- the message menu --------------------------------------------------------------------------
  // One menu for the page, moved into the message it is opened for (so it scrolls with it). The
  // WAI-ARIA menu button pattern: Enter/Space/↓ open it on the first item (↑ on the last), arrows
  // Home/End move, Escape closes it and gives the focus back to its button, Tab closes it and
  // moves on, a click or tap anywhere else closes it.
  const menu = h('div', { className: 'msg-menu', id: 'message-menu', role: 'menu',
    'aria-label': t('menu.label'), hidden: true });
  let menuFor = null; // the <li> whose menu is open

  const menuItems = () => [...menu.querySelectorAll('[role="menuitem"]')];
  const menuButtonOf = (li) => li.querySelector('.msg-menu-button');

  function clearMenuConfirms() {
    for (const item of menuItems()) {
      clearTimeout(confirmTimers.get(item));
      confirmTimers.delete(item);
    }
  }

  function fillMenu(li, actions = li.menuActions) {
    clearMenuConfirms();
    menu.dataset.actions = actions.join(' ');
    menu.replaceChildren(...actions.map((action) => h('button', { type: 'button',
      role: 'menuitem', tabIndex: -1,
      className: `menu-item${DANGER_ACTIONS.has(action) ? ' danger' : ''}`,
      dataset: { action } }, menuText(action))));
  }

  function openMenu(li, focus = 'first') {
    if (menuFor && menuFor !== li) closeMenu();
    const button = menuButtonOf(li);
    menuFor = li;
    fillMenu(li);
    menu.dataset.placement = 'below';
    li.append(menu);
    menu.hidden = false;
    li.classList.add('menu-open');
    button.setAttribute('aria-expanded', 'true');
    button.setAttribute('aria-controls', menu.id);
    // Open upwards when the menu would run past the bottom of the visible messages (the last
    // message of a short chat) and there is more room above.
    const view = scroller.getBoundingClientRect();
    const at = button.getBoundingClientRect();
    if (menu.getBoundingClientRect().bottom > view.bottom && at.top - view.top > view.bottom - at.bottom) {
      menu.dataset.placement = 'above';
    }
    const items = menuItems();
    items[focus === 'last' ? items.length - 1 : 0]?.focus();
  }

  function closeMenu({ focusButton = false } = {}) {
    const li = menuFor;
    if (!li) return;
    menuFor = null;
    clearMenuConfirms();
    menu.hidden = true;
    menu.remove();
    li.classList.remove('menu-open');
    const button = menuButtonOf(li);
    button.setAttribute('aria-expanded', 'false');
    button.removeAttribute('aria-controls');
    if (focusButton && !button.hidden) button.focus();
  }

  /** The open menu's message changed (hidden by another moderator …): offer what now applies. */
  function refreshMenu() {
    const li = menuFor;
    if (!li || menu.dataset.actions === li.menuActions.join(' ')) return;
    if (li.menuActions.length === 0) return void closeMenu();
    const had = menu.contains(document.activeElement);
    const index = Math.max(0, menuItems().indexOf(document.activeElement));
    fillMenu(li);
    const items = menuItems();
    if (had) items[Math.min(index, items.length - 1)].focus();
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
        nodes.get(item.key).renderKey = item.key;
        nodes.delete(temp);
      }
    }
    const wanted = new Set(items.map((i) => i.key));
    let refocus = null;
    for (const [key, el] of nodes) {
      if (!wanted.has(key)) {
        if (el.contains(document.activeElement)) refocus = focusAfter(el, wanted);
        if (el === menuFor) closeMenu();
        el.remove();
        nodes.delete(key);
      }
    }
    // Names, avatars and day separators are decided for the whole list on every render
    // (timelineLayout), never patched: out-of-order inserts, hides, deletes and prepended history
    // all come out right.
    const user = me();
    const layout = timelineLayout(items.map((item) => ({
      key: item.key,
      author: item.kind === 'local' ? (user ? user.id : null) : item.message.user_id,
      at: Date.parse(item.kind === 'local' ? item.entry.created_at : item.message.created_at),
    })), { now: Date.now() });
    const wantedDays = new Set(layout.filter((l) => l.day).map((l) => l.day.key));
    for (const [key, el] of days) {
      if (!wantedDays.has(key)) {
        el.remove();
        days.delete(key);
      }
    }
    let previous = null;
    let added = 0;
    const place = (el) => {
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (el !== expected) list.insertBefore(el, expected);
      previous = el;
    };
    items.forEach((item, i) => {
      const { day, groupStart } = layout[i];
      if (day) {
        let separator = days.get(day.key);
        if (!separator) {
          separator = h('li', { className: 'day-separator', dataset: { day: day.key } },
            h('span', { className: 'day-label' }));
          days.set(day.key, separator);
        }
        const label = dayLabel(day, formatDay);
        if (separator.firstChild.textContent !== label) separator.firstChild.textContent = label;
        place(separator);
      }
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
      const group = groupStart ? 'start' : 'cont';
      if (el.dataset.group !== group) el.dataset.group = group;
      place(el);
    });
    if (refocus) refocus.focus({ preventScroll: true });
    // "Today" becomes "Yesterday" at midnight even in a quiet chat.
    if (dayTimer === null) {
      dayTimer = setTimeout(() => {
        dayTimer = null;
        renderTimeline();
      }, msUntilNextDay() + 1000);
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
    jump.textContent = t('timeline.newBelow', { count: unreadBelow });
  }

  /**
   * Where the keyboard focus goes when the message holding it leaves the list (deleted here or
   * by a moderator elsewhere, discarded): the nearest remaining message's menu button, else the
   * message list itself — never the page's <body>.
   */
  function focusAfter(gone, wanted) {
    for (const step of ['nextElementSibling', 'previousElementSibling']) {
      for (let n = gone[step]; n; n = n[step]) {
        if (!n.matches('li.msg') || !wanted.has(n.renderKey)) continue;
        const button = menuButtonOf(n);
        if (!button.hidden) return button;
      }
    }
    return scroller;
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
      sendButton.disabled = input.disabled || slowUntil > Date.now();
    }, config.sendCooldownMs);
    // Slow mode: the next message may go this much later (the server decides; this only says).
    const slow = client.webinar ? client.webinar.slow_mode_seconds : 0;
    if (slow > 0 && !client.staff) startSlowCountdown(slow);
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
  async function moderate(id, call) {
    if (busy.has(id)) return; // one call per message at a time (a double activation)
    busy.add(id);
    try {
      await call();
    } finally {
      busy.delete(id);
    }
  }

  list.addEventListener('click', async (event) => {
    const menuButton = event.target.closest('.msg-menu-button');
    if (menuButton) {
      const li = menuButton.closest('li.msg');
      if (menuFor === li) closeMenu({ focusButton: true });
      else openMenu(li);
      return;
    }
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    const li = button.closest('li.msg');
    const action = button.dataset.action;
    const id = Number(li.dataset.id);
    if (action === 'retry') client.retry(li.dataset.clientMsgId);
    else if (action === 'discard') client.discard(li.dataset.clientMsgId);
    else if (action === 'hide' || action === 'unhide') {
      closeMenu({ focusButton: true });
      await moderate(id, () => client.setHidden(id, action === 'hide'));
    } else if (action === 'timeout') {
      fillMenu(li, TIMEOUT_ACTIONS); // the durations, in the same menu
      menuItems()[0].focus();
    } else if (action.startsWith('timeout-') || action === 'ban' || action === 'unban') {
      if (action === 'ban' && button.dataset.confirm !== 'yes') {
        button.dataset.confirm = 'yes';
        button.textContent = t('menu.confirmBan');
        confirmTimers.set(button, setTimeout(() => {
          confirmTimers.delete(button);
          delete button.dataset.confirm;
          button.textContent = menuText('ban');
        }, CONFIRM_MS));
        return;
      }
      const author = client.timeline.items().find((i) => i.key === li.renderKey)?.message?.user_id;
      closeMenu({ focusButton: true });
      if (!author) return;
      await moderate(`user-${author}`, () => (action === 'unban' ? client.unbanUser(author)
        : client.banUser(author, action === 'ban' ? null : Number(action.slice(8)))));
    } else if (action === 'delete') {
      // Confirmed by a second activation within CONFIRM_MS (the menu stays open), never by a
      // blocking dialog.
      if (button.dataset.confirm !== 'yes') {
        button.dataset.confirm = 'yes';
        button.textContent = t('menu.confirmDelete');
        confirmTimers.set(button, setTimeout(() => {
          confirmTimers.delete(button);
          delete button.dataset.confirm;
          button.textContent = menuText('delete');
        }, CONFIRM_MS));
        return;
      }
      clearTimeout(confirmTimers.get(button));
      confirmTimers.delete(button);
      closeMenu({ focusButton: true });
      await moderate(id, () => client.deleteMessage(id));
    }
  });

  list.addEventListener('keydown', (event) => {
    const menuButton = event.target.closest('.msg-menu-button');
    if (menuButton && (event.key === 'ArrowDown' || event.key === 'ArrowUp')) {
      event.preventDefault();
      openMenu(menuButton.closest('li.msg'), event.key === 'ArrowUp' ? 'last' : 'first');
      return;
    }
    if (!menu.contains(event.target)) return;
    const items = menuItems();
    const at = items.indexOf(event.target);
    switch (event.key) {
      case 'ArrowDown': items[(at + 1) % items.length].focus(); break;
      case 'ArrowUp': items[(at - 1 + items.length) % items.length].focus(); break;
      case 'Home': items[0].focus(); break;
      case 'End': items[items.length - 1].focus(); break;
      case 'Escape': closeMenu({ focusButton: true }); break;
      case 'Tab':
        // Back on the button, the browser's own Tab (or Shift+Tab) moves on from there.
        closeMenu({ focusButton: true });
        return;
      default: return;
    }
    event.preventDefault();
  });
  menu.addEventListener('focusout', (event) => {
    const to = event.relatedTarget;
    if (menuFor && to && !menu.contains(to) && to !== menuButtonOf(menuFor)) closeMenu();
  });
  // A click or tap anywhere outside the menu and its button closes it.
  const onPointerDown = (event) => {
    if (!menuFor || menu.contains(event.target) || menuButtonOf(menuFor).contains(event.target)) {
      return;
    }
    closeMenu();
  };
  const onKeyDown = (event) => {
    if (event.key === 'Escape' && menuFor && !menu.contains(event.target)) {
      closeMenu({ focusButton: true });
    }
  };
  document.addEventListener('pointerdown', onPointerDown, true);
  document.addEventListener('keydown', onKeyDown);

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
  settingsButton.addEventListener('click', () => {
    settings.hidden = !settings.hidden;
    settingsButton.setAttribute('aria-expanded', String(!settings.hidden));
    if (!settings.hidden) (client.role === 'host' ? modeSelect : pinInput).focus();
  });
  modeSelect.addEventListener('change', () => client.setChatMode(modeSelect.value));
  slowSelect.addEventListener('change', () => client.setSlowMode(Number(slowSelect.value)));
  pinButton.addEventListener('click', async () => {
    const text = pinInput.value.trim();
    if (!text) return;
    pinButton.disabled = true;
    const result = await client.setPinned(text);
    pinButton.disabled = false;
    if (result.ok) pinInput.value = '';
  });
  unpin.addEventListener('click', () => client.setPinned(null));
  for (const [button, format] of [[exportCsv, 'csv'], [exportJson, 'json']]) {
    button.addEventListener('click', async () => {
      button.disabled = true;
      const result = await client.downloadTranscript(format);
      button.disabled = false;
      if (!result.ok) return;
      const url = URL.createObjectURL(result.blob);
      const link = h('a', { href: url, download: result.filename, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    });
  }
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
      case 'presence':
        renderPresence();
        break;
      case 'timeline':
        renderTimeline({ prepended: event.prepended || 0 });
        break;
      case 'status':
        renderStatus();
        renderTimeline(); // an unsent message waits for the network or is retried
        break;
      case 'rejected':
        if (!input.value.trim()) {
          input.value = event.content;
          updateCounter();
          autosize();
        }
        showError(event.retryAfterS
          ? t('composer.sendAgainIn', { error: event.error, n: event.retryAfterS }) : event.error);
        if (event.retryAfterS) startSlowCountdown(event.retryAfterS);
        input.focus();
        break;
      case 'notice':
        showBanner(event.level === 'error' ? 'error' : 'info', event.text);
        setTimeout(() => showBanner('info'), 6000);
        break;
      case 'auth_lost': {
        onAuthLost?.();
        const next = safeNextPath(window.location.pathname + window.location.search) || '';
        showBanner('error', t('error.sessionEnded'),
          h('a', { href: `/?next=${encodeURIComponent(next)}` }, t('error.logInAgain')));
        break;
      }
      case 'ban':
        // Timed out or banned: say until when, no composer; the client re-joins by itself.
        banBanner.textContent = event.ban ? banText(event.ban) : '';
        banBanner.hidden = !event.ban;
        root.dataset.banned = event.ban ? event.ban.code : '';
        if (event.ban) {
          input.disabled = true;
          sendButton.disabled = true;
        } else {
          showBanner('info', t('ban.over'));
          setTimeout(() => showBanner('info'), 6000);
        }
        break;
      case 'fatal':
        input.disabled = true;
        sendButton.disabled = true;
        showBanner('error', t('error.unavailable', { error: event.error }),
          h('a', { href: '/?list=1' }, t('error.backToWebinars')));
        break;
      default:
        break;
    }
  });

  renderStatus();
  renderTimeline();
  if (client.webinar) renderHeader();
  renderPresence();
  updateCounter();
  input.focus();

  return {
    client,
    unmount() {
      off();
      qa.unmount();
      if (cooldownTimer !== null) clearTimeout(cooldownTimer);
      if (slowTimer !== null) clearTimeout(slowTimer);
      if (dayTimer !== null) clearTimeout(dayTimer);
      for (const t of confirmTimers.values()) clearTimeout(t);
      document.removeEventListener('pointerdown', onPointerDown, true);
      document.removeEventListener('keydown', onKeyDown);
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
  document.title = `${t('page.chatTitle')} · webinar-chat`;
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
