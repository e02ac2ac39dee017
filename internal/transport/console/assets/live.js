// The live panel: usageStats (one aggregate a second) and usageEvents (one event
// per call) over one graphql-transport-ws connection. A refused key (close codes
// 4401/4403 and the other protocol codes) shows the reason and stops: no retries.
import {wsClient, CloseError, keyList, keyLabel} from './api.js';
import {el, clear, badge, fmtMs, fmtNum, fmtShortTime} from './ui.js';
import {lineChart} from './chart.js';

const statsQ = `subscription LiveStats($key: ID) { usageStats(apiKeyID: $key, intervalSeconds: 1) { at requests errors rateLimited p50Ms p99Ms droppedEvents } }`;
const eventsQ = `subscription LiveEvents($key: ID) { usageEvents(apiKeyID: $key) { id apiKeyID ownerID operationType operationName outcome latencyMs ip at droppedEvents warning { type scope threshold } } }`;

const windowSecs = 60;
let chosenKey = '';

export function render(root, session) {
  const admin = session.viewer.isAdmin;
  const status = el('p', {class: 'live-status', role: 'status', 'aria-live': 'polite'});
  const keySel = el('select', {id: 'live-key'}, el('option', {value: ''}, admin ? 'Choose a key' : 'All keys'));
  const connect = el('button', {type: 'button', class: 'secondary', hidden: true}, 'Connect again');
  const tiles = el('div', {class: 'tiles'});
  const chartBox = el('div', {class: 'charts one'});
  const events = el('ol', {class: 'events', 'aria-label': 'Latest calls, newest first'});
  root.append(
    el('div', {class: 'view-head'}, el('h2', {}, 'Live'),
      el('p', {class: 'hint'}, 'usageStats and usageEvents over WebSocket: every call of ' + (admin ? 'the chosen key' : 'your tenant') + ' as it happens.')),
    el('form', {class: 'controls', onsubmit: (e) => e.preventDefault()}, el('label', {}, 'Key', keySel), connect),
    status, tiles, chartBox,
    el('h3', {}, 'Latest calls'), events);

  let client = null;
  let stops = [];
  let stats = [];
  let keys = [];
  let stopped = false;

  keyList(session).then((list) => {
    keys = list;
    for (const k of list) keySel.append(el('option', {value: k.id, selected: k.id === chosenKey}, `${k.name} (${k.prefix}…)`));
  });

  function setStatus(kind, text) {
    status.className = 'live-status live-' + kind;
    status.dataset.state = kind;
    clear(status, el('span', {class: 'dot-' + kind, 'aria-hidden': 'true'}), text);
  }

  function disconnect() {
    for (const s of stops) s();
    stops = [];
    if (client) client.dispose();
    client = null;
  }

  function fail(err) {
    if (stopped) return;
    disconnect();
    if (err instanceof CloseError) {
      setStatus(err.fatal ? 'refused' : 'closed', err.fatal
        ? `Refused by the server (${err.code}): ${err.reason || 'no reason given'}. Not reconnecting; check the key and sign in again.`
        : `Connection closed (${err.code}${err.reason ? ': ' + err.reason : ''}).`);
    } else {
      const e = Array.isArray(err) ? err[0] : err;
      const code = e && e.extensions && e.extensions.code;
      setStatus(code === 'UNAUTHENTICATED' || code === 'FORBIDDEN' ? 'refused' : 'closed',
        `The stream ended${code ? ' (' + code + ')' : ''}: ${(e && e.message) || 'no reason given'}`);
    }
    connect.hidden = false;
  }

  function start() {
    disconnect();
    connect.hidden = true;
    stats = [];
    drawStats();
    if (admin && !chosenKey) {
      setStatus('idle', 'Platform admins watch one key at a time: choose a key.');
      return;
    }
    setStatus('connecting', 'Connecting…');
    client = wsClient();
    client.on('connected', () => setStatus('live', 'Live: updates every second.'));
    const vars = {key: chosenKey || null};
    stops.push(client.subscribe({query: statsQ, variables: vars}, {
      next: (r) => {
        if (r.errors) return fail(r.errors);
        stats.push(r.data.usageStats);
        if (stats.length > windowSecs) stats.shift();
        drawStats();
      },
      error: fail,
      complete: () => fail(new Error('the server ended the stream')),
    }));
    stops.push(client.subscribe({query: eventsQ, variables: vars}, {
      next: (r) => {
        if (r.errors) return fail(r.errors);
        addEvent(r.data.usageEvents);
      },
      error: fail,
      complete: () => {},
    }));
  }

  function drawStats() {
    const last = stats[stats.length - 1] || {requests: 0, errors: 0, rateLimited: 0, p50Ms: 0, p99Ms: 0};
    const total = stats.reduce((a, s) => a + s.requests, 0);
    clear(tiles,
      tile('Requests, last second', fmtNum(last.requests)),
      tile(`Requests, last ${windowSecs} s`, fmtNum(total)),
      tile('Errors, last second', fmtNum(last.errors)),
      tile('Rate limited, last second', fmtNum(last.rateLimited)),
      tile('p50 / p99', `${fmtMs(last.p50Ms)} / ${fmtMs(last.p99Ms)}`));
    const now = stats.length ? Date.parse(stats[stats.length - 1].at) : Date.now();
    clear(chartBox, lineChart([
      {name: 'Requests', cls: 's-requests', points: stats.map((s) => [Date.parse(s.at), s.requests])},
      {name: 'Errors', cls: 's-errors', points: stats.map((s) => [Date.parse(s.at), s.errors])},
      {name: 'Rate limited', cls: 's-limited', points: stats.map((s) => [Date.parse(s.at), s.rateLimited])},
    ], now - windowSecs * 1000, now, {title: 'Requests per second', height: 180, fmtTime: (d) => d.toLocaleTimeString(), fmtValue: fmtNum}));
  }

  function addEvent(ev) {
    const what = ev.warning ? `${ev.warning.type} (${ev.warning.scope}, ${ev.warning.threshold} %)` : `${ev.operationType} ${ev.operationName || '(anonymous)'}`;
    events.prepend(el('li', {class: 'event', dataset: {outcome: ev.outcome}},
      el('time', {datetime: ev.at}, new Date(ev.at).toLocaleTimeString()),
      badge(ev.outcome),
      el('span', {class: 'event-op'}, what),
      el('span', {class: 'event-key'}, keyLabel(keys, ev.apiKeyID) + (ev.ownerID ? ' · owner ' + ev.ownerID : '')),
      el('span', {class: 'event-meta'}, `${fmtMs(ev.latencyMs)} · ${ev.ip || '—'}`),
      ev.droppedEvents ? el('span', {class: 'event-dropped'}, `${ev.droppedEvents} missed`) : null));
    while (events.children.length > 50) events.lastChild.remove();
  }

  function tile(label, value) {
    return el('div', {class: 'tile'}, el('span', {class: 'tile-label'}, label), el('span', {class: 'tile-value'}, value));
  }

  keySel.addEventListener('change', () => { chosenKey = keySel.value; events.replaceChildren(); start(); });
  connect.addEventListener('click', start);
  start();
  return () => { stopped = true; disconnect(); };
}
