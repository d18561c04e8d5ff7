// The log-in page (`/`): log in, then go to `?next=` (a chat path) or list the user's webinars.

import { AuthSession } from './auth.js';
import { safeNextPath } from './chat-core.js';
import { createLogger } from './monitor.js';

const $ = (id) => document.getElementById(id);

function nextPath() {
  return safeNextPath(new URLSearchParams(window.location.search).get('next'));
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
    if (r.status !== 401) showError('Cannot reach the server. Please try again.');
    return;
  }
  const { user, webinars } = r.body;
  if (webinars.length === 1 && !new URLSearchParams(window.location.search).has('list')) {
    window.location.replace(`/webinars/${webinars[0].id}`);
    return;
  }
  $('signed-in-as').textContent = `Signed in as ${user.display_name} (${user.email})`;
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
    state.textContent = w.chat_open ? 'Chat open' : 'Chat closed';
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

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const email = $('email').value.trim();
    const password = $('password').value;
    if (!email || !password) {
      showError('Enter your e-mail address and password.');
      (email ? $('password') : $('email')).focus();
      return;
    }
    showError('');
    button.disabled = true;
    button.textContent = 'Logging in…';
    try {
      const r = await auth.api('POST', '/api/auth/login', { body: { email, password }, auth: false });
      if (r.status === 200 && r.body?.access_token) {
        auth.save(r.body);
        const next = nextPath();
        if (next) window.location.assign(next);
        else await showWebinars(auth);
        return;
      }
      showError(r.status === 401 ? 'Wrong e-mail or password.'
        : r.status === 0 ? 'Cannot reach the server. Check your connection.'
          : (r.body?.error || `Log-in failed (error ${r.status}).`));
      $('password').select();
    } finally {
      button.disabled = false;
      button.textContent = 'Log in';
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
