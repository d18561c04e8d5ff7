// The Q&A panel of the chat page (docs/webinar-features.md, "Q&A"): a "Chat | Q&A" tab bar
// under the header, and the Q&A view — ask box, the questions with their vote toggles and counts,
// a sort switch (votes / newest) and, for staff, answered / dismiss / reopen. The state is the
// ChatClient's QuestionBoard (chat-core.js), kept from QUESTION events; this file only renders it
// and forwards clicks. Fits the 320–420 px side panel (style.css, "Q&A").

import { MAX_MESSAGE_LENGTH } from './chat-client.js';
import { questionActionText, questionActions } from './chat-core.js';
import { locale, t } from './i18n.js';

function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'className') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key in el && !key.includes('-')) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  el.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

const timeFormat = new Intl.DateTimeFormat(locale(), { hour: '2-digit', minute: '2-digit' });
const LABELLED_STATUSES = new Set(['answered', 'dismissed']);

/**
 * Mount the tabs and the Q&A view into the chat `panel`: the tabs go after `after` (the last
 * element above the conversation), the view replaces `chatParts` (the timeline and the composer)
 * while its tab is selected. → {unmount()}
 */
export function mountQa({ client, panel, after, chatParts }) {
  let view = 'chat';
  let sort = 'votes';
  const busy = new Set(); // question ids with a call in flight
  const nodes = new Map(); // question id → <li>

  const chatTab = h('button', { className: 'view-tab', type: 'button', role: 'tab',
    id: 'tab-chat', 'aria-selected': 'true', 'aria-controls': 'chat-view' }, t('qa.tabChat'));
  const qaCount = h('span', { className: 'tab-count', hidden: true });
  const qaTab = h('button', { className: 'view-tab', type: 'button', role: 'tab', id: 'tab-qa',
    'aria-selected': 'false', 'aria-controls': 'qa-panel', tabIndex: -1 }, t('qa.tabQa'), qaCount);
  const tabs = h('div', { className: 'view-tabs', role: 'tablist',
    'aria-label': t('qa.tabsLabel') },
    chatTab, qaTab);

  const sortVotes = h('button', { className: 'sort-button', type: 'button', dataset:
    { sort: 'votes' }, 'aria-pressed': 'true' }, t('qa.sortVotes'));
  const sortNewest = h('button', { className: 'sort-button', type: 'button', dataset:
    { sort: 'newest' }, 'aria-pressed': 'false' }, t('qa.sortNewest'));
  const toolbar = h('div', { className: 'qa-toolbar' },
    h('span', { className: 'qa-sort-label', id: 'qa-sort-label' }, t('qa.sort')),
    h('div', { className: 'qa-sort', role: 'group', 'aria-labelledby': 'qa-sort-label' },
      sortVotes, sortNewest));
  const empty = h('div', { className: 'empty qa-empty' },
    h('p', { className: 'empty-title' }, t('qa.emptyTitle')),
    h('p', { className: 'muted' }, t('qa.emptyHint')));
  const list = h('ol', { className: 'questions', id: 'questions', 'aria-label': t('qa.listLabel'),
    'aria-live': 'polite' });
  const scroller = h('div', { className: 'qa-scroller', tabIndex: 0 }, empty, list);

  const input = h('textarea', { id: 'question-input', className: 'composer-input', rows: 1,
    maxLength: MAX_MESSAGE_LENGTH, placeholder: t('qa.placeholder'), autocomplete: 'off' });
  const askButton = h('button', { id: 'ask-button', className: 'button primary send',
    type: 'submit' }, t('qa.ask'));
  const error = h('p', { id: 'qa-error', className: 'composer-error', role: 'alert',
    hidden: true });
  const form = h('form', { className: 'composer qa-form', id: 'qa-form', noValidate: true },
    h('label', { for: 'question-input', className: 'visually-hidden' }, t('qa.inputLabel')),
    h('div', { className: 'composer-row' }, input, askButton), error);
  const qaPanel = h('section', { className: 'qa-panel', id: 'qa-panel', role: 'tabpanel',
    'aria-labelledby': 'tab-qa', hidden: true }, toolbar, scroller, form);

  after.after(tabs);
  chatParts[chatParts.length - 1].after(qaPanel);
  chatParts[0].id = chatParts[0].id || 'chat-view';

  function select(next, { focus = false } = {}) {
    view = next;
    const qa = view === 'qa';
    chatTab.setAttribute('aria-selected', String(!qa));
    qaTab.setAttribute('aria-selected', String(qa));
    chatTab.tabIndex = qa ? -1 : 0;
    qaTab.tabIndex = qa ? 0 : -1;
    for (const part of chatParts) part.hidden = qa;
    qaPanel.hidden = !qa;
    panel.dataset.view = view;
    if (focus) (qa ? qaTab : chatTab).focus();
    if (qa) render();
  }

  function fill(li, q) {
    const voteCount = h('span', { className: 'vote-count' }, String(q.votes));
    const vote = h('button', { className: 'vote-button', type: 'button', dataset:
      { action: 'vote' }, 'aria-pressed': String(q.voted),
      'aria-label': `${t(q.voted ? 'qa.removeUpvote' : 'qa.upvote')} (${
        t('qa.votes', { count: q.votes })})`, disabled: busy.has(q.id) || Boolean(client.ban) },
    h('span', { className: 'vote-arrow', 'aria-hidden': 'true' }, '▲'), voteCount);
    const at = q.created_at ? new Date(q.created_at) : null;
    const meta = h('p', { className: 'question-meta' },
      h('span', { className: 'question-author' }, q.user?.display_name || t('qa.someone')),
      at && !Number.isNaN(at.getTime())
        ? h('time', { dateTime: q.created_at }, ` · ${timeFormat.format(at)}`) : null,
      LABELLED_STATUSES.has(q.status)
        ? h('span', { className: `question-status status-${q.status}` }, t(`qa.status.${q.status}`))
        : null);
    const actions = questionActions({ staff: client.staff, status: q.status });
    const staffRow = actions.length ? h('div', { className: 'question-actions' },
      ...actions.map((action) => h('button', { className: `link-button small${
        action === 'dismissed' ? ' danger' : ''}`, type: 'button', dataset: { action },
      disabled: busy.has(q.id) }, questionActionText(action)))) : null;
    li.replaceChildren(vote, h('div', { className: 'question-body' },
      h('p', { className: 'question-content' }, q.content), meta, staffRow));
    li.dataset.id = String(q.id);
    li.dataset.status = q.status;
    li.dataset.voted = String(q.voted);
  }

  function render() {
    const questions = client.questions.sorted(sort);
    const open = client.questions.openCount();
    qaCount.textContent = open ? String(open) : '';
    qaCount.hidden = !open;
    qaTab.setAttribute('aria-label', open ? t('qa.tabOpen', { count: open }) : t('qa.tabQa'));
    if (view !== 'qa') return;
    // Keep the keyboard's place across re-renders: the same button of the same question.
    const active = document.activeElement;
    const focusLi = active && list.contains(active) ? active.closest('li.question') : null;
    const focus = focusLi ? { id: focusLi.dataset.id, action: active.dataset.action } : null;
    const seen = new Set();
    questions.forEach((q, index) => {
      let li = nodes.get(q.id);
      if (!li) {
        li = h('li', { className: 'question' });
        nodes.set(q.id, li);
      }
      seen.add(q.id);
      fill(li, q);
      if (list.children[index] !== li) list.insertBefore(li, list.children[index] || null);
    });
    for (const [id, li] of nodes) {
      if (!seen.has(id)) {
        li.remove();
        nodes.delete(id);
      }
    }
    empty.hidden = questions.length > 0;
    root().dataset.questions = String(questions.length);
    if (focus) {
      const again = nodes.get(Number(focus.id))?.querySelector(
        focus.action ? `[data-action="${focus.action}"]` : 'button');
      (again || nodes.get(Number(focus.id))?.querySelector('button') || qaTab).focus();
    }
  }

  function root() {
    return panel.parentElement || panel;
  }

  function showError(text) {
    error.textContent = text || '';
    error.hidden = !text;
  }

  async function ask() {
    const text = input.value.trim();
    if (!text || askButton.disabled) return;
    showError('');
    askButton.disabled = true;
    const result = await client.askQuestion(text);
    askButton.disabled = Boolean(client.ban);
    if (result.ok) {
      input.value = '';
      render();
    } else {
      showError(t('failed.ask', { error: result.error }));
    }
    input.focus();
  }

  chatTab.addEventListener('click', () => select('chat'));
  qaTab.addEventListener('click', () => select('qa'));
  tabs.addEventListener('keydown', (event) => {
    if (event.key !== 'ArrowLeft' && event.key !== 'ArrowRight') return;
    event.preventDefault();
    select(view === 'qa' ? 'chat' : 'qa', { focus: true });
  });
  for (const button of [sortVotes, sortNewest]) {
    button.addEventListener('click', () => {
      sort = button.dataset.sort;
      sortVotes.setAttribute('aria-pressed', String(sort === 'votes'));
      sortNewest.setAttribute('aria-pressed', String(sort === 'newest'));
      render();
    });
  }
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    ask();
  });
  input.addEventListener('keydown', (event) => {
    // Enter while an IME composes (Hangul, kana …) picks the composition; it is not a send.
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      ask();
    }
  });
  list.addEventListener('click', async (event) => {
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    const id = Number(button.closest('li.question').dataset.id);
    if (busy.has(id)) return;
    busy.add(id);
    render();
    try {
      if (button.dataset.action === 'vote') await client.voteQuestion(id, !client.questions.voted(id));
      else await client.setQuestionStatus(id, button.dataset.action);
    } finally {
      busy.delete(id);
      render();
    }
  });

  const off = client.subscribe((event) => {
    if (event.type === 'questions' || event.type === 'webinar') render();
    if (event.type === 'ban') {
      input.disabled = Boolean(event.ban);
      askButton.disabled = Boolean(event.ban);
      render();
    }
  });
  render();

  return {
    select,
    unmount() {
      off();
      tabs.remove();
      qaPanel.remove();
    },
  };
}
