// Webhooks: the endpoints, and for the chosen one its deliveries with every attempt
// (status code, latency, error), redeliver and a test event.
import {gql} from './api.js';
import {el, clear, badge, errorBox, fmtTime, table} from './ui.js';

const listQ = `{ webhooks(first: 100, orderBy: {field: CREATED_AT, direction: DESC}) {
  edges { node { id url description events active disabledReason failingSince createdAt } } } }`;
const deliveriesQ = `query($id: ID!) { webhookDeliveries(webhookID: $id, first: 50, orderBy: {field: CREATED_AT, direction: DESC}) {
  edges { node { id eventID eventType status attempts createdAt lastAttemptAt nextAttemptAt responseStatus error
    attemptLog { attempt at statusCode latencyMs error } } } } }`;

let chosen = '';

export function render(root, session) {
  const v = session.viewer;
  const canWrite = v.isAdmin || v.scopes.includes('webhooks:write');
  const list = el('div', {'aria-live': 'polite'});
  const detail = el('div', {class: 'deliveries', 'aria-live': 'polite'});
  const notice = el('p', {class: 'notice', role: 'status'});
  root.append(
    el('div', {class: 'view-head'}, el('h2', {}, 'Webhooks'),
      el('p', {class: 'hint'}, 'webhooks, webhookDeliveries with attemptLog, redeliverWebhookDelivery and sendTestWebhook. Create endpoints with createWebhook.')),
    notice, list, detail);

  let hooks = [];
  async function reload() {
    try {
      const d = await gql(listQ);
      hooks = d.webhooks.edges.map((e) => e.node);
      if (!chosen && hooks.length) chosen = hooks[0].id;
      drawList();
      loadDeliveries();
    } catch (e) {
      clear(list, errorBox(e));
    }
  }

  function drawList() {
    const rows = hooks.map((h) => el('tr', {class: h.id === chosen ? 'chosen' : ''},
      el('td', {}, el('button', {type: 'button', class: 'link', 'aria-pressed': String(h.id === chosen), onclick: () => { chosen = h.id; drawList(); loadDeliveries(); }}, h.url),
        h.description ? el('div', {class: 'sub'}, h.description) : null),
      el('td', {}, badge(h.active ? 'ACTIVE' : 'DISABLED'), h.disabledReason ? el('div', {class: 'sub'}, h.disabledReason) : null),
      el('td', {}, h.events.join(', ')),
      el('td', {class: 'actions'}, canWrite ? el('button', {type: 'button', class: 'small secondary', 'aria-label': 'Send a test event to ' + h.url, onclick: () => act(
        `mutation($id: ID!) { sendTestWebhook(id: $id) { id } }`, {id: h.id}, 'Queued a webhook.test event.', h.id)}, 'Send test') : null)));
    clear(list, table(['Endpoint', 'State', 'Events', 'Actions'], rows, {label: 'Webhooks', empty: 'No webhook endpoints yet.', class: 'stack'}));
  }

  async function loadDeliveries() {
    if (!chosen) return clear(detail);
    const h = hooks.find((h) => h.id === chosen);
    try {
      const d = await gql(deliveriesQ, {id: chosen});
      const items = d.webhookDeliveries.edges.map((e) => e.node);
      clear(detail, el('h3', {}, 'Deliveries to ', el('code', {}, h ? h.url : chosen)),
        items.length ? el('ul', {class: 'delivery-list'}, items.map(delivery)) : el('p', {class: 'empty'}, 'No deliveries yet.'));
    } catch (e) {
      clear(detail, errorBox(e));
    }
  }

  function delivery(dl) {
    const attempts = (dl.attemptLog || []).map((a) => el('tr', {},
      el('td', {class: 'num'}, a.attempt), el('td', {}, fmtTime(a.at)),
      el('td', {}, a.statusCode ? String(a.statusCode) : '—'), el('td', {class: 'num'}, a.latencyMs + ' ms'), el('td', {}, a.error || '')));
    return el('li', {class: 'delivery card'},
      el('div', {class: 'delivery-head'},
        el('strong', {}, dl.eventType), ' ', badge(dl.status),
        el('span', {class: 'sub'}, ` ${dl.attempts} attempt${dl.attempts === 1 ? '' : 's'} · created ${fmtTime(dl.createdAt)}` + (dl.nextAttemptAt ? ` · next ${fmtTime(dl.nextAttemptAt)}` : '')),
        canWrite ? el('button', {type: 'button', class: 'small secondary', 'aria-label': `Redeliver ${dl.eventType} ${dl.eventID}`, onclick: () => act(
          `mutation($id: ID!) { redeliverWebhookDelivery(id: $id) { id status } }`, {id: dl.id}, `Redelivering ${dl.eventType}.`)}, 'Redeliver') : null),
      el('details', {}, el('summary', {}, 'Attempt log'),
        table(['#', 'At', 'Status', 'Latency', 'Error'], attempts, {empty: 'No attempt yet.'})));
  }

  async function act(mutation, vars, done) {
    notice.className = 'notice';
    try {
      await gql(mutation, vars);
      notice.textContent = done;
    } catch (e) {
      notice.className = 'notice error';
      notice.textContent = e.message + (e.code ? ` (${e.code})` : '');
    }
    setTimeout(loadDeliveries, 500);
  }

  reload();
}
