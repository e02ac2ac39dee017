// Boots GraphiQL for the Latchkey playground page. It lives in its own file
// so the page's Content-Security-Policy needs no 'unsafe-inline' for scripts.
// Its settings come from the page's <script id="playground-config"
// type="application/json"> block, which the server renders.
(function () {
  'use strict';

  var root = document.getElementById('graphiql');
  var config = JSON.parse(document.getElementById('playground-config').textContent);

  // HTTP endpoint relative to this page; the WebSocket URL for subscriptions
  // is the same URL with ws: or wss: (matching http: or https:).
  var httpURL = new URL(config.endpoint, window.location.href);
  var wsURL = new URL(httpURL.href);
  wsURL.protocol = httpURL.protocol === 'https:' ? 'wss:' : 'ws:';

  // Subscriptions go through gqlws.js instead of GraphiQL's bundled graphql-ws
  // client, which retries a refused key (close code 4403) six times over ~38 s
  // and then shows a stack trace. gqlws.js never retries: a refusal ends the
  // subscription with a GraphQL-style error naming the close code and reason.
  // The headers of the Headers tab are its connection_init payload.
  function wsClient(headers) {
    var client = LatchkeyWS.createClient({url: wsURL.href, connectionParams: headers || {}});
    return {
      subscribe: function (payload, sink) {
        return client.subscribe(payload, {
          next: function (v) { sink.next(v); },
          complete: function () { sink.complete(); },
          error: function (err) {
            if (err instanceof LatchkeyWS.CloseError) {
              sink.next({errors: [{
                message: err.message + (err.fatal ? '. Not retrying: fix the key in the Headers tab and run again.' : '. Run again to reconnect.'),
                extensions: {code: err.code === 4403 || err.code === 4401 ? 'UNAUTHENTICATED' : 'WEBSOCKET_CLOSED', closeCode: err.code}
              }]});
              sink.complete();
              return;
            }
            // A GraphQL error list from the server's "error" message.
            sink.next({errors: Array.isArray(err) ? err : [{message: String(err && err.message || err)}]});
            sink.complete();
          }
        });
      }
    };
  }

  function fetcher(params, opts) {
    var headers = (opts && opts.headers) || {};
    return GraphiQL.createFetcher({url: httpURL.href, wsClient: wsClient(headers)})(params, opts);
  }

  // Storage: everything that carries the Headers tab lives in sessionStorage, so
  // an API key pasted here is forgotten when the browser tab closes: the headers,
  // the tabs' state and the history and favourites (GraphiQL stores each run's
  // headers with it). The last query, variables and the layout stay in
  // localStorage.
  var sessionKeys = {'graphiql:headers': true, 'graphiql:tabState': true, 'graphiql:queries': true, 'graphiql:favorites': true};
  function area(key) { return sessionKeys[key] ? window.sessionStorage : window.localStorage; }
  // Earlier versions kept them in localStorage: move them over (and off the disk).
  Object.keys(sessionKeys).forEach(function (key) {
    var old = window.localStorage.getItem(key);
    if (old !== null) {
      if (window.sessionStorage.getItem(key) === null) window.sessionStorage.setItem(key, old);
      window.localStorage.removeItem(key);
    }
  });
  var storage = {
    getItem: function (key) { return area(key).getItem(key); },
    setItem: function (key, value) { area(key).setItem(key, value); },
    removeItem: function (key) { area(key).removeItem(key); },
    clear: function () {
      [window.localStorage, window.sessionStorage].forEach(function (s) {
        for (var i = s.length - 1; i >= 0; i--) {
          var k = s.key(i);
          if (k && k.indexOf('graphiql:') === 0) s.removeItem(k);
        }
      });
    },
    get length() { return window.localStorage.length + window.sessionStorage.length; }
  };

  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      storage: storage,
      defaultQuery: config.defaultQuery,
      // defaultHeaders (not headers) so that a key the user pasted survives a
      // reload of this tab (it is kept in sessionStorage, see above).
      defaultHeaders: config.defaultHeaders,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      defaultEditorToolsVisibility: 'headers',
    })
  );
})();
