// Small DOM helpers: elements are built with el(), never from HTML strings, so no
// value from the server is ever parsed as markup.

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (v === true) node.setAttribute(k, '');
    else node.setAttribute(k, String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return d.toLocaleString(undefined, {year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit'});
}

export function fmtShortTime(d, withDate) {
  return d.toLocaleString(undefined, withDate ? {month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit'} : {hour: '2-digit', minute: '2-digit'});
}

export function fmtNum(n) {
  return Number(n || 0).toLocaleString();
}

export function fmtMs(n) {
  n = Number(n || 0);
  return n >= 100 ? Math.round(n) + ' ms' : n.toFixed(1) + ' ms';
}

// badge shows an enum value (status, outcome) with a class for its colour.
export function badge(value) {
  const v = String(value || '').toLowerCase();
  return el('span', {class: 'badge badge-' + v.replace(/[^a-z_]/g, '')}, value);
}

// errorBox shows an error where a panel's content would be.
export function errorBox(err) {
  const code = err && err.code ? ' (' + err.code + ')' : '';
  return el('p', {class: 'error', role: 'alert'}, (err && err.message ? err.message : String(err)) + code);
}

// confirmDialog asks a yes/no question in a modal <dialog> (focus stays in it,
// Escape cancels) and resolves to true when the user confirms.
export function confirmDialog(title, message, confirmLabel, danger) {
  return new Promise((resolve) => {
    const dlg = el('dialog', {class: 'dialog', 'aria-labelledby': 'dlg-title'},
      el('h2', {id: 'dlg-title'}, title),
      el('p', {}, message),
      el('div', {class: 'actions'},
        el('button', {type: 'button', class: 'secondary', onclick: () => dlg.close('cancel')}, 'Cancel'),
        el('button', {type: 'button', class: danger ? 'danger' : '', onclick: () => dlg.close('ok')}, confirmLabel)));
    dlg.addEventListener('close', () => { dlg.remove(); resolve(dlg.returnValue === 'ok'); });
    document.body.append(dlg);
    dlg.showModal();
  });
}

// secretDialog shows a secret once, with a copy button.
export function secretDialog(title, note, secret) {
  return new Promise((resolve) => {
    const status = el('span', {class: 'copied', role: 'status'});
    const field = el('input', {type: 'text', readonly: true, value: secret, class: 'secret', 'aria-label': 'Secret'});
    const dlg = el('dialog', {class: 'dialog', 'aria-labelledby': 'dlg-title'},
      el('h2', {id: 'dlg-title'}, title),
      el('p', {}, note),
      field,
      el('div', {class: 'actions'},
        status,
        el('button', {type: 'button', class: 'secondary', onclick: async () => {
          try {
            await navigator.clipboard.writeText(secret);
            status.textContent = 'Copied';
          } catch (e) {
            field.select();
            status.textContent = 'Press Ctrl+C to copy';
          }
        }}, 'Copy'),
        el('button', {type: 'button', onclick: () => dlg.close('ok')}, 'Done')));
    dlg.addEventListener('close', () => { dlg.remove(); resolve(); });
    document.body.append(dlg);
    dlg.showModal();
    field.focus();
    field.select();
  });
}

// table builds a scrollable table; rows are arrays of cells.
export function table(headers, rows, opts = {}) {
  // Each cell knows its column's name, for the stacked layout of narrow screens.
  for (const tr of rows) [...tr.children].forEach((td, i) => { td.dataset.label = headers[i] || ''; });
  return el('div', {class: 'table-wrap', tabindex: opts.label ? '0' : undefined, role: opts.label ? 'region' : undefined, 'aria-label': opts.label},
    el('table', {class: opts.class || ''},
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', {scope: 'col'}, h)))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', {colspan: headers.length, class: 'empty'}, opts.empty || 'Nothing yet.')))));
}
