// The console's entry: sign-in with a pasted key, then one view per section
// (#usage, #live, #keys, #webhooks, #logs), each drawn from the public GraphQL API.
import {gql, savedKey, saveKey, forgetKey} from './api.js';
import {el, clear, errorBox} from './ui.js';
import * as usage from './usage.js';
import * as live from './live.js';
import * as keys from './keys.js';
import * as webhooks from './webhooks.js';
import * as logs from './logs.js';

const views = {usage, live, keys, webhooks, logs};
const $ = (id) => document.getElementById(id);

const viewerQuery = `{ viewer { isAdmin scopes tenantID apiKey { id name prefix } } }`;

let session = null;   // {viewer}
let cleanup = null;   // the current view's teardown

async function signIn(key, remember) {
  const data = await gql(viewerQuery, {}, key);
  saveKey(key, remember);
  session = {viewer: data.viewer};
  showSession();
}

function showSession() {
  const v = session.viewer;
  $('signin').hidden = true;
  $('nav').hidden = false;
  const who = $('who');
  who.hidden = false;
  const name = v.apiKey ? `${v.apiKey.name} (${v.apiKey.prefix}…)` : 'ADMIN_TOKEN';
  clear(who,
    el('span', {class: 'who-name', title: v.scopes.join(' ')}, v.isAdmin ? 'Platform admin: ' : 'Key: ', name),
    el('button', {type: 'button', class: 'secondary small', onclick: signOut}, 'Sign out'));
  route();
}

function signOut() {
  if (cleanup) cleanup();
  cleanup = null;
  forgetKey();
  session = null;
  $('nav').hidden = true;
  $('who').hidden = true;
  clear($('view'));
  $('signin').hidden = false;
  $('key').value = '';
  $('key').focus();
}

function route() {
  if (!session) return;
  const name = (location.hash || '#usage').slice(1).split('/')[0];
  const view = views[name] || usage;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.getAttribute('href') === '#' + (views[name] ? name : 'usage')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (cleanup) cleanup();
  cleanup = null;
  const container = clear($('view'));
  try {
    cleanup = view.render(container, session) || null;
  } catch (e) {
    container.append(errorBox(e));
  }
}

$('signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const err = $('signin-error');
  err.hidden = true;
  const key = $('key').value.trim();
  const button = ev.target.querySelector('button');
  button.disabled = true;
  try {
    await signIn(key, $('remember').checked);
    $('main').focus();
  } catch (e) {
    err.textContent = e.code === 'UNAUTHENTICATED' ? 'This key was refused: ' + e.message : e.message;
    err.hidden = false;
  } finally {
    button.disabled = false;
  }
});

window.addEventListener('hashchange', route);

const key = savedKey();
if (key) {
  signIn(key, !!localStorage.getItem('latchkey.console.key')).catch((e) => {
    forgetKey();
    $('signin').hidden = false;
    const err = $('signin-error');
    err.textContent = 'The saved key no longer works (' + (e.code || e.message) + '): paste a key to sign in.';
    err.hidden = false;
    $('key').focus();
  });
} else {
  $('key').focus();
}
