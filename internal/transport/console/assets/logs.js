// The request log: usageLogs, newest first, filtered by key, owner, outcome,
// operation or tag, IP and time, with cursor paging ("Load more").
import {gql, keyList, keyLabel} from './api.js';
import {el, clear, badge, errorBox, fmtMs, table} from './ui.js';

const q = `query Log($where: UsageLogWhereInput, $after: Cursor) {
  usageLogs(first: 50, after: $after, where: $where) {
    pageInfo { hasNextPage endCursor }
    edges { node { id at apiKeyID ownerID operationType operationName outcome latencyMs ip } }
  }
}`;

const outcomes = ['OK', 'ERROR', 'FORBIDDEN', 'RATE_LIMITED', 'QUOTA_EXCEEDED', 'VALID', 'REVOKED', 'EXPIRED', 'DISABLED', 'TENANT_INACTIVE', 'INSUFFICIENT_PERMISSIONS', 'USAGE_EXCEEDED'];
const f = {key: '', owner: '', outcome: '', operation: '', ip: '', from: '', to: ''};

export function render(root, session) {
  const key = el('select', {id: 'log-key'}, el('option', {value: ''}, 'Any key'));
  const owner = el('input', {id: 'log-owner', value: f.owner, placeholder: 'cust_…'});
  const outcome = el('select', {id: 'log-outcome'}, el('option', {value: ''}, 'Any outcome'), outcomes.map((o) => el('option', {value: o, selected: o === f.outcome}, o)));
  const op = el('input', {id: 'log-operation', value: f.operation, placeholder: 'name or tag (prefix)'});
  const ip = el('input', {id: 'log-ip', value: f.ip, placeholder: '203.0.113.'});
  const from = el('input', {id: 'log-from', type: 'datetime-local', value: f.from});
  const to = el('input', {id: 'log-to', type: 'datetime-local', value: f.to});
  const count = el('p', {class: 'count', role: 'status'});
  const body = el('div', {'aria-live': 'polite'});
  const more = el('button', {type: 'button', class: 'secondary', hidden: true}, 'Load more');
  const form = el('form', {class: 'controls filters', role: 'search'},
    el('label', {}, 'Key', key), el('label', {}, 'Owner', owner), el('label', {}, 'Outcome', outcome),
    el('label', {}, 'Operation / tag', op), el('label', {}, 'IP starts with', ip),
    el('label', {}, 'From', from), el('label', {}, 'To', to),
    el('div', {class: 'buttons'}, el('button', {type: 'submit'}, 'Apply'), el('button', {type: 'reset', class: 'secondary'}, 'Clear')));
  root.append(
    el('div', {class: 'view-head'}, el('h2', {}, 'Request log'),
      el('p', {class: 'hint'}, 'usageLogs: every stored call and verification, newest first. Calls appear within a fraction of a second.')),
    form, count, body, more);

  let keys = [];
  let rows = [];
  let cursor = null;
  keyList(session).then((list) => {
    keys = list;
    for (const k of list) key.append(el('option', {value: k.id, selected: k.id === f.key}, `${k.name} (${k.prefix}…)`));
  });

  function where() {
    const w = {};
    if (f.key) w.apiKeyID = f.key;
    if (f.owner) w.ownerID = f.owner;
    if (f.outcome) w.outcome = f.outcome;
    if (f.operation) w.operationNameHasPrefix = f.operation;
    if (f.ip) w.ipHasPrefix = f.ip;
    if (f.from) w.atGTE = new Date(f.from).toISOString();
    if (f.to) w.atLT = new Date(f.to).toISOString();
    return Object.keys(w).length ? w : null;
  }

  async function load(append) {
    try {
      const d = await gql(q, {where: where(), after: append ? cursor : null});
      const page = d.usageLogs;
      rows = (append ? rows : []).concat(page.edges.map((e) => e.node));
      cursor = page.pageInfo.endCursor;
      more.hidden = !page.pageInfo.hasNextPage;
      // No totalCount: counting a log of millions of rows costs more than the page.
      count.textContent = `${rows.length} calls` + (page.pageInfo.hasNextPage ? ', more below' : '');
      draw();
    } catch (e) {
      clear(body, errorBox(e));
    }
  }

  function draw() {
    const trs = rows.map((r) => el('tr', {dataset: {outcome: r.outcome}},
      el('td', {}, el('time', {datetime: r.at}, new Date(r.at).toLocaleString())),
      el('td', {}, keyLabel(keys, r.apiKeyID), r.ownerID ? el('div', {class: 'sub'}, 'owner ' + r.ownerID) : null),
      el('td', {}, el('span', {class: 'sub'}, r.operationType + ' '), r.operationName || '(anonymous)'),
      el('td', {}, badge(r.outcome)),
      el('td', {class: 'num'}, fmtMs(r.latencyMs)),
      el('td', {}, el('code', {}, r.ip || '—'))));
    clear(body, table(['Time', 'Key', 'Operation', 'Outcome', 'Latency', 'IP'], trs, {label: 'Request log', empty: 'No calls match.', class: 'log stack'}));
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    Object.assign(f, {key: key.value, owner: owner.value.trim(), outcome: outcome.value, operation: op.value.trim(), ip: ip.value.trim(), from: from.value, to: to.value});
    load(false);
  });
  form.addEventListener('reset', () => {
    Object.assign(f, {key: '', owner: '', outcome: '', operation: '', ip: '', from: '', to: ''});
    setTimeout(() => load(false));
  });
  more.addEventListener('click', () => load(true));
  load(false);
}
