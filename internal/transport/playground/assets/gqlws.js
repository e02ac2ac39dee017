// A small graphql-transport-ws client (the protocol of graphql-ws,
// https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md), written for
// Latchkey's playground and console. It never reconnects by itself: a server that
// closes the socket with a code of its own (4400 bad message, 4401 missing key,
// 4403 refused key, 4409 duplicate id, 4429 too many inits, 4408 init timeout)
// ends every open operation with an error naming the code and the reason, and the
// caller decides what to do. A later subscribe opens a new connection.
//
// It is a classic script that sets globalThis.LatchkeyWS, so the playground can
// load it with a <script> tag and the console with `import './gqlws.js'`.
//
//   const client = LatchkeyWS.createClient({url, connectionParams: {'X-API-Key': key}});
//   const stop = client.subscribe({query, variables}, {next, error, complete});
//
// The sink has the shape graphql-ws's Client.subscribe takes, so GraphiQL's
// createFetcher accepts the client as its wsClient.
(function (global) {
  'use strict';

  var closeReasons = {
    1000: 'closed',
    1001: 'the server is going away',
    1006: 'the connection was lost',
    4400: 'the server could not read a message',
    4401: 'no API key was sent, or it was sent too late',
    4403: 'the API key was refused',
    4406: 'the server does not speak graphql-transport-ws',
    4408: 'no connection_init within the server\'s timeout',
    4409: 'an operation id was used twice',
    4429: 'too many connection_init messages',
    4500: 'the server failed'
  };

  // fatalCodes are the close codes after which trying again with the same
  // settings cannot help: callers should show the reason and stop.
  var fatalCodes = [4400, 4401, 4403, 4406, 4409, 4429, 4500];

  function CloseError(code, reason) {
    this.name = 'CloseError';
    this.code = code;
    this.reason = reason || '';
    this.fatal = fatalCodes.indexOf(code) >= 0;
    this.message = 'WebSocket closed with ' + code + ': ' + (reason || closeReasons[code] || 'no reason given');
  }
  CloseError.prototype = Object.create(Error.prototype);

  function createClient(opts) {
    var socket = null;      // the open (or opening) WebSocket
    var acked = false;
    var nextID = 1;
    var ops = {};           // id -> {payload, sink, sent}
    var listeners = {};     // event -> [fn]

    function emit(ev, arg) {
      (listeners[ev] || []).forEach(function (fn) { try { fn(arg); } catch (e) { /* listener's own */ } });
    }

    function send(msg) {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(msg));
    }

    function connect() {
      acked = false;
      var ws = new WebSocket(opts.url, 'graphql-transport-ws');
      socket = ws;
      emit('connecting');
      ws.onopen = function () {
        if (socket !== ws) return;
        var params = typeof opts.connectionParams === 'function' ? opts.connectionParams() : opts.connectionParams;
        ws.send(JSON.stringify({type: 'connection_init', payload: params || {}}));
      };
      ws.onmessage = function (ev) {
        if (socket !== ws) return;
        var msg;
        try { msg = JSON.parse(ev.data); } catch (e) { ws.close(4400, 'Invalid message received'); return; }
        switch (msg.type) {
          case 'connection_ack':
            acked = true;
            emit('connected');
            Object.keys(ops).forEach(start);
            break;
          case 'ping':
            send({type: 'pong'});
            break;
          case 'next':
            if (ops[msg.id]) ops[msg.id].sink.next(msg.payload);
            break;
          case 'error':
            if (ops[msg.id]) {
              var op = ops[msg.id];
              delete ops[msg.id];
              op.sink.error(msg.payload);
            }
            break;
          case 'complete':
            if (ops[msg.id]) {
              var done = ops[msg.id];
              delete ops[msg.id];
              done.sink.complete();
            }
            break;
        }
      };
      ws.onclose = function (ev) {
        if (socket !== ws) return;
        socket = null;
        acked = false;
        var err = new CloseError(ev.code, ev.reason);
        emit('closed', err);
        var pending = ops;
        ops = {};
        Object.keys(pending).forEach(function (id) { pending[id].sink.error(err); });
      };
    }

    function start(id) {
      var op = ops[id];
      if (!op || op.sent) return;
      op.sent = true;
      send({id: id, type: 'subscribe', payload: op.payload});
    }

    function subscribe(payload, sink) {
      var id = String(nextID++);
      ops[id] = {payload: payload, sink: sink, sent: false};
      if (!socket) connect();
      else if (acked) start(id);
      return function unsubscribe() {
        if (!ops[id]) return;
        var wasSent = ops[id].sent;
        delete ops[id];
        if (wasSent) send({id: id, type: 'complete'});
        if (Object.keys(ops).length === 0 && socket && !opts.keepAlive) {
          var ws = socket;
          socket = null;
          ws.close(1000, 'Normal Closure');
        }
      };
    }

    return {
      subscribe: subscribe,
      on: function (ev, fn) {
        (listeners[ev] = listeners[ev] || []).push(fn);
        return function () { listeners[ev] = (listeners[ev] || []).filter(function (f) { return f !== fn; }); };
      },
      dispose: function () {
        var ws = socket;
        socket = null;
        ops = {};
        if (ws) ws.close(1000, 'Normal Closure');
      }
    };
  }

  global.LatchkeyWS = {createClient: createClient, CloseError: CloseError, closeReasons: closeReasons, fatalCodes: fatalCodes};
})(typeof globalThis !== 'undefined' ? globalThis : window);
