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

  var fetcher = GraphiQL.createFetcher({
    url: httpURL.href,
    subscriptionUrl: wsURL.href,
  });

  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: config.defaultQuery,
      // defaultHeaders (not headers) so that a key the user pasted and
      // GraphiQL persisted in localStorage survives a reload.
      defaultHeaders: config.defaultHeaders,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
      defaultEditorToolsVisibility: 'headers',
    })
  );
})();
