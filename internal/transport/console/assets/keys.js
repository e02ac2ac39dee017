// Keys: the list with status and a filter; create (the secret is shown once, with
// a copy button), rotate, disable/enable and revoke (after a confirmation naming the
// key). Every action is one GraphQL mutation.
import {gql} from './api.js';
import {el, clear, badge, errorBox, fmtTime, confirmDialog, secretDialog, table} from './ui.js';

const listQ = `query Keys($where: ApiKeyWhereInput) {
  apiKeys(first: 100, orderBy: {field: CREATED_AT, direction: DESC}, where: $where) {
    totalCount
    edges { node { id name prefix kind environment status enabled ownerID scopes tenantID lastUsedAt createdAt expiresAt } }
  }
}`;
const keyFields = `id name prefix kind environment status enabled ownerID scopes tenantID lastUsedAt createdAt expiresAt`;

const scopes = ['tenant:read', 'tenant:write', 'keys:read', 'keys:write', 'keys:verify', 'usage:read', 'webhooks:read', 'webhooks:write'];
const filters = {text: '', status: '', kind: ''};

export function render(root, session) {
  const v = session.viewer;
  const canWrite = v.isAdmin || v.scopes.includes('keys:write');
  const list = el('div', {'aria-live': 'polite'});
  const notice = el('p', {class: 'notice', role: 'status'});
  const text = el('input', {type: 'search', id: 'keys-filter', placeholder: 'Name, prefix or owner', value: filters.text});
  const status = el('select', {id: 'keys-status'}, ['', 'ACTIVE', 'ROTATING', 'EXPIRED', 'REVOKED'].map((s) =>
    el('option', {value: s, selected: s === filters.status}, s ? s[0] + s.slice(1).toLowerCase() : 'Any status')));
  const kind = el('select', {id: 'keys-kind'}, [['', 'Any kind'], ['MANAGEMENT', 'Management'], ['CONSUMER', 'Consumer']].map(([val, label]) =>
    el('option', {value: val, selected: val === filters.kind}, label)));
  root.append(
    el('div', {class: 'view-head'}, el('h2', {}, 'Keys'),
      el('p', {class: 'hint'}, 'apiKeys, createApiKey, rotateApiKey, updateApiKey(enabled) and revokeApiKey.')),
    canWrite ? createForm(session, reload, notice) : null,
    el('form', {class: 'controls', role: 'search', onsubmit: (e) => e.preventDefault()},
      el('label', {}, 'Filter', text), el('label', {}, 'Status', status), el('label', {}, 'Kind', kind)),
    notice, list);

  let keys = [];
  async function reload() {
    session.keyList = null; // the other views' key names
    try {
      const where = filters.kind ? {kind: filters.kind} : null;
      const data = await gql(listQ, {where});
      keys = data.apiKeys.edges.map((e) => e.node);
      draw();
    } catch (e) {
      clear(list, errorBox(e));
    }
  }

  function draw() {
    const t = filters.text.toLowerCase();
    const shown = keys.filter((k) => (!filters.status || k.status === filters.status) &&
      (!t || k.name.toLowerCase().includes(t) || k.prefix.toLowerCase().includes(t) || (k.ownerID || '').toLowerCase().includes(t)));
    const rows = shown.map((k) => el('tr', {dataset: {key: k.id}},
      el('td', {}, el('strong', {class: 'key-name'}, k.name), el('br'), el('code', {}, k.prefix + '…')),
      el('td', {}, badge(k.status), k.enabled ? null : [' ', badge('DISABLED')]),
      el('td', {}, k.kind === 'CONSUMER' ? 'Consumer' : k.tenantID ? 'Management' : 'Admin', k.environment === 'TEST' ? ' · test' : ''),
      el('td', {}, k.kind === 'CONSUMER' ? (k.ownerID || '—') : el('span', {class: 'scopes'}, k.tenantID ? (k.scopes.join(' ') || '—') : 'every scope')),
      el('td', {}, fmtTime(k.lastUsedAt)),
      el('td', {class: 'actions'}, canWrite && k.status !== 'REVOKED' && k.status !== 'EXPIRED' ? actions(k) : null)));
    clear(list, el('p', {class: 'count'}, `${shown.length} of ${keys.length} keys`),
      table(['Key', 'Status', 'Kind', 'Owner / scopes', 'Last used', 'Actions'], rows, {label: 'Keys', empty: 'No keys match.', class: 'keys stack'}));
  }

  function actions(k) {
    const act = (label, fn, cls) => el('button', {type: 'button', class: 'small ' + (cls || 'secondary'), 'aria-label': `${label} ${k.name}`, onclick: fn}, label);
    return [
      act('Rotate', async () => {
        if (!await confirmDialog('Rotate key', `Rotate “${k.name}” (${k.prefix}…)? A new secret is issued and the old key stops working at once.`, 'Rotate')) return;
        await run(async () => {
          const d = await gql(`mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 0) { secret apiKey { id name } } }`, {id: k.id});
          await secretDialog('Key rotated', `The new secret of “${k.name}”. It is shown only this once: store it now.`, d.rotateApiKey.secret);
          return `Rotated “${k.name}”.`;
        });
      }),
      act(k.enabled ? 'Disable' : 'Enable', () => run(async () => {
        await gql(`mutation($id: ID!, $on: Boolean!) { updateApiKey(id: $id, input: {enabled: $on}) { id enabled } }`, {id: k.id, on: !k.enabled});
        return `${k.enabled ? 'Disabled' : 'Enabled'} “${k.name}”.`;
      })),
      act('Revoke', async () => {
        if (!await confirmDialog('Revoke key', `Revoke “${k.name}” (${k.prefix}…)? It stops working at once, on every instance. This cannot be undone.`, `Revoke ${k.name}`, true)) return;
        await run(async () => {
          await gql(`mutation($id: ID!) { revokeApiKey(id: $id) { id status } }`, {id: k.id});
          return `Revoked “${k.name}”.`;
        });
      }, 'secondary danger'),
    ];
  }

  async function run(fn) {
    notice.className = 'notice';
    try {
      notice.textContent = await fn();
    } catch (e) {
      notice.className = 'notice error';
      notice.textContent = e.message + (e.code ? ` (${e.code})` : '');
    }
    reload();
  }

  text.addEventListener('input', () => { filters.text = text.value; draw(); });
  status.addEventListener('change', () => { filters.status = status.value; draw(); });
  kind.addEventListener('change', () => { filters.kind = kind.value; reload(); });
  reload();
}

function createForm(session, reload, notice) {
  const v = session.viewer;
  const name = el('input', {id: 'new-key-name', name: 'name', required: true, maxlength: 100, placeholder: 'e.g. ci'});
  const kind = el('select', {id: 'new-key-kind'}, el('option', {value: 'MANAGEMENT'}, 'Management (calls this API)'), el('option', {value: 'CONSUMER'}, 'Consumer (verified for your API)'));
  const env = el('select', {id: 'new-key-env'}, el('option', {value: 'LIVE'}, 'Live'), el('option', {value: 'TEST'}, 'Test'));
  const owner = el('input', {id: 'new-key-owner', placeholder: 'your customer id'});
  const tenant = v.isAdmin ? el('input', {id: 'new-key-tenant', required: true, placeholder: 'ten_…'}) : null;
  const own = v.isAdmin ? scopes : scopes.filter((s) => v.scopes.includes(s) || (s === 'keys:verify' && v.scopes.includes('keys:write')));
  const boxes = own.map((s) => el('label', {class: 'check'}, el('input', {type: 'checkbox', value: s, checked: s.endsWith(':read')}), s));
  const scopeSet = el('fieldset', {class: 'scopes-set'}, el('legend', {}, 'Scopes'), boxes);
  const ownerLabel = el('label', {hidden: true}, 'Owner ID', owner);
  kind.addEventListener('change', () => {
    const consumer = kind.value === 'CONSUMER';
    scopeSet.hidden = consumer;
    ownerLabel.hidden = !consumer;
  });
  const form = el('form', {class: 'card create', id: 'create-key', 'aria-label': 'Create a key'},
    el('div', {class: 'grid'},
      el('label', {}, 'Name', name),
      el('label', {}, 'Kind', kind),
      el('label', {}, 'Environment', env),
      tenant ? el('label', {}, 'Tenant ID', tenant) : null,
      ownerLabel),
    scopeSet,
    el('button', {type: 'submit'}, 'Create key'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = {name: name.value.trim(), kind: kind.value, environment: env.value, scopes: []};
    if (kind.value === 'CONSUMER') {
      if (owner.value.trim()) input.ownerID = owner.value.trim();
    } else {
      input.scopes = boxes.map((b) => b.firstChild).filter((c) => c.checked).map((c) => c.value);
    }
    if (tenant) input.tenantID = tenant.value.trim();
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const d = await gql(`mutation($in: CreateApiKeyInput!) { createApiKey(input: $in) { secret apiKey { ${keyFields} } } }`, {in: input});
      form.reset();
      kind.dispatchEvent(new Event('change'));
      await secretDialog('Key created', `The secret of “${d.createApiKey.apiKey.name}”. It is shown only this once: store it now. Only its SHA-256 hash is kept.`, d.createApiKey.secret);
      notice.className = 'notice';
      notice.textContent = `Created “${d.createApiKey.apiKey.name}”.`;
      reload();
    } catch (e) {
      notice.className = 'notice error';
      notice.textContent = e.message + (e.code ? ` (${e.code})` : '');
    } finally {
      button.disabled = false;
    }
  });
  return el('details', {class: 'create-wrap'}, el('summary', {}, 'Create a key'), form);
}
