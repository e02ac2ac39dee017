// The console's only way to the server: GraphQL over HTTP on the same origin, with
// the API key the user pasted, and subscriptions over graphql-transport-ws
// (gqlws.js). Nothing here is private to the console: a tenant's own dashboard
// can make exactly these calls.
import './gqlws.js';

const config = JSON.parse(document.getElementById('console-config').textContent);
export const endpoint = new URL(config.endpoint, location.href);

const storeName = 'latchkey.console.key';

// The key lives in sessionStorage (this tab, until it closes) unless the user
// asked to be remembered on this device (localStorage).
export function savedKey() {
  return sessionStorage.getItem(storeName) || localStorage.getItem(storeName) || '';
}

export function saveKey(key, remember) {
  forgetKey();
  (remember ? localStorage : sessionStorage).setItem(storeName, key);
}

export function forgetKey() {
  sessionStorage.removeItem(storeName);
  localStorage.removeItem(storeName);
}

// GraphQLError is a response's first error, with its extensions.code.
export class GraphQLError extends Error {
  constructor(errors, status) {
    const first = errors[0] || {};
    super(first.message || 'request failed');
    this.code = (first.extensions && first.extensions.code) || '';
    this.extensions = first.extensions || {};
    this.errors = errors;
    this.status = status;
  }
}

// gql runs one query or mutation and returns its data; a response with errors
// throws a GraphQLError (data and errors together are rare here: every field the
// console asks for is needed).
export async function gql(query, variables = {}, key = savedKey()) {
  let resp;
  try {
    resp = await fetch(endpoint, {
      method: 'POST',
      headers: {'Content-Type': 'application/json', 'Accept': 'application/graphql-response+json, application/json', 'X-API-Key': key},
      body: JSON.stringify({query, variables}),
    });
  } catch (e) {
    throw new GraphQLError([{message: 'The server cannot be reached (' + e.message + ')', extensions: {code: 'NETWORK'}}], 0);
  }
  let body;
  try {
    body = await resp.json();
  } catch (e) {
    throw new GraphQLError([{message: 'The server answered HTTP ' + resp.status + ' without a GraphQL body', extensions: {code: 'HTTP_' + resp.status}}], resp.status);
  }
  if (body.errors && body.errors.length) throw new GraphQLError(body.errors, resp.status);
  return body.data;
}

// wsClient returns a graphql-transport-ws client that sends the key in
// connection_init and never reconnects on its own.
export function wsClient(key = savedKey()) {
  const url = new URL(endpoint.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return globalThis.LatchkeyWS.createClient({url: url.href, connectionParams: {'X-API-Key': key}});
}

export const CloseError = globalThis.LatchkeyWS.CloseError;

// keyList returns the keys the viewer may list (id, name, prefix), newest first,
// or [] without keys:read.
export async function keyList(session) {
  const v = session.viewer;
  if (!v.isAdmin && !v.scopes.includes('keys:read')) return [];
  if (!session.keyList) {
    session.keyList = gql(`{ apiKeys(first: 100, orderBy: {field: CREATED_AT, direction: DESC}) { edges { node { id name prefix kind } } } }`)
      .then((d) => d.apiKeys.edges.map((e) => e.node))
      .catch(() => []);
  }
  return session.keyList;
}

// keyLabel names a key for people: its name and display prefix.
export function keyLabel(keys, id) {
  const k = keys.find((k) => k.id === id);
  return k ? `${k.name} (${k.prefix}…)` : id;
}
