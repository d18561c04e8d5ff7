// The log-in page (`/`): log in, then go to `?next=` (a chat path) or list the user's webinars.

import { AuthSession } from './auth.js';
import { safeNextPath } from './chat-core.js';
import { languageSelect, serverErrorText, t } from './i18n.js';
import { createLogger } from './monitor.js';

const $ = (id) => document.getElementById(id);

function nextPath() {
  return safeNextPath(new URLSearchParams(window.location.search).get('next'));
}

/** The page's static texts (`data-i18n` keys in login.html) in the page's language. */
function translatePage() {
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  document.title = `${t('page.loginTitle')} · webinar-chat`;
  $('language-slot').append(languageSelect(document, window));
}

function showError(text) {
  const el = $('login-error');
  el.textContent = text;
  el.hidden = !text;
}

async function showWebinars(auth) {
  const r = await auth.api('GET', '/api/me');
  if (r.status !== 200 || !r.body?.success) {
    if (r.status === 401) auth.clear();
    $('webinars-view').hidden = true;
    $('login-view').hidden = false;
    if (r.status !== 401) showError(t('login.unreachable'));
    return;
  }
  const { user, webinars } = r.body;
  if (webinars.length === 1 && !new URLSearchParams(window.location.search).has('list')) {
    window.location.replace(`/webinars/${webinars[0].id}`);
    return;
  }
  $('signed-in-as').textContent = t('login.signedInAs', { name: user.display_name,
    email: user.email });
  const list = $('webinar-list');
  list.replaceChildren();
  for (const w of webinars) {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = `/webinars/${w.id}`;
    a.className = 'webinar-link';
    const title = document.createElement('span');
    title.textContent = w.title;
    const state = document.createElement('span');
    state.className = `pill ${w.chat_open ? 'pill-open' : 'pill-closed'}`;
    state.textContent = t(w.chat_open ? 'login.chatOpen' : 'login.chatClosed');
    a.append(title, state);
    li.append(a);
    list.append(li);
  }
  $('no-webinars').hidden = webinars.length > 0;
  $('login-view').hidden = true;
  $('webinars-view').hidden = false;
}

function main() {
  const logger = createLogger({ level: 'info' });
  const auth = new AuthSession({ logger });
  const form = $('login-form');
  const button = $('login-button');
  translatePage();

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const email = $('email').value.trim();
    const password = $('password').value;
    if (!email || !password) {
      showError(t('login.missing'));
      (email ? $('password') : $('email')).focus();
      return;
    }
    showError('');
    button.disabled = true;
    button.textContent = t('login.busy');
    try {
      const r = await auth.api('POST', '/api/auth/login', { body: { email, password }, auth: false });
      if (r.status === 200 && r.body?.access_token) {
        auth.save(r.body);
        const next = nextPath();
        if (next) window.location.assign(next);
        else await showWebinars(auth);
        return;
      }
      showError(r.status === 401 ? t('login.wrong')
        : r.status === 0 ? t('login.offline')
          : serverErrorText(r.body, r.status, t('login.failed', { status: r.status })));
      $('password').select();
    } finally {
      button.disabled = false;
      button.textContent = t('login.submit');
    }
  });

  $('logout-button').addEventListener('click', async () => {
    const refreshToken = auth.data?.refresh_token;
    auth.clear();
    if (refreshToken) {
      await auth.api('POST', '/api/auth/logout', { body: { refresh_token: refreshToken }, auth: false });
    }
    $('webinars-view').hidden = true;
    $('login-view').hidden = false;
    $('email').focus();
  });

  if (auth.loggedIn) {
    const next = nextPath();
    if (next) window.location.replace(next);
    else showWebinars(auth);
  } else {
    $('email').focus();
  }
}

main();
