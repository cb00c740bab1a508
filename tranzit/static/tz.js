/*
 * tz.js: the browser client for tranzit's websocket rule protocol.
 *
 * Plain script, no build step, no dependencies:
 *
 *     <script src="/static/tranzit/tz.js"></script>
 *     <script>
 *       const tz = new TZ();                       // ws(s)://<this page's host>/ws
 *       tz.on('open', () => tz.send('get_hello', []));
 *       tz.on('get_hello', (text) => console.log(text));
 *       tz.call('echo', 'hi').then((result) => console.log(result));
 *     </script>
 *
 * The old API keeps working: `new TZ(url, callbacks)` where `callbacks` maps a
 * rule name to a function, and `tz.send(method, argsArray)` sends `method|a,b`.
 * The protocol is described in docs/protocol.md, this client in docs/tzjs.md.
 */
(function (root) {
  'use strict';

  const EVENTS = ['open', 'close', 'error', 'message'];

  const DEFAULTS = {
    path: '/ws',          // used when no url is given
    reconnect: true,
    minDelay: 500,        // ms before the first reconnect attempt
    maxDelay: 15000,      // ms, the backoff never waits longer than this
    queueLimit: 100,      // messages kept while disconnected
    callTimeout: 0,       // ms; 0 waits for the server as long as the connection lives
    token: null,          // () => token or Promise of one: sent as ?token= on every (re)connect
    WebSocket: null,      // a WebSocket class to use instead of the global one
  };

  /** An error from the server (`error|code,rule,message` or a JSON `error`) or from the client. */
  class TZError extends Error {
    constructor(code, message, rule, id) {
      super(message || code);
      this.name = 'TZError';
      this.code = code;
      this.rule = rule === undefined ? null : rule;
      this.id = id === undefined ? null : id;
    }
  }

  /**
   * Split an incoming text-form message exactly as the server splits calls:
   * the name is everything before the first `|`, the rest is split on every
   * `,` without trimming (`n|` gives `['']`). Returns null when there is no `|`.
   */
  function parseText(text) {
    const bar = text.indexOf('|');
    if (bar < 0) {
      return null;
    }
    return { name: text.slice(0, bar), args: text.slice(bar + 1).split(',') };
  }

  /** `error|<code>,<rule>,<message>`: the message itself may contain commas. */
  function parseTextError(rest) {
    const first = rest.indexOf(',');
    if (first < 0) {
      return new TZError(rest, rest, null);
    }
    const second = rest.indexOf(',', first + 1);
    const code = rest.slice(0, first);
    const rule = second < 0 ? rest.slice(first + 1) : rest.slice(first + 1, second);
    const message = second < 0 ? code : rest.slice(second + 1);
    return new TZError(code, message, rule || null);
  }

  /** Parse a JSON-form message, or return null when `text` is not one. */
  function parseJson(text) {
    if (text.trimStart().charAt(0) !== '{') {
      return null;
    }
    try {
      const msg = JSON.parse(text);
      return msg !== null && typeof msg === 'object' && !Array.isArray(msg) ? msg : null;
    } catch (e) {
      return null;
    }
  }

  /** The delay before reconnect attempt number `attempt` (0-based): doubling, capped, jittered. */
  function backoffDelay(attempt, minDelay, maxDelay, random) {
    const ceiling = Math.min(maxDelay, minDelay * Math.pow(2, Math.min(attempt, 30)));
    // "Equal jitter": half fixed, half random, so clients that lost the same
    // server do not all come back in the same millisecond.
    return Math.round(ceiling / 2 + (ceiling / 2) * random());
  }

  /** ws(s)://host/path for the page's own origin, or the url given, made absolute. */
  function resolveUrl(url, path) {
    const loc = root.location;
    if (url && /^wss?:\/\//i.test(url)) {
      return url;
    }
    if (url && /^https?:\/\//i.test(url)) {
      return url.replace(/^http/i, 'ws');
    }
    if (!loc || !loc.host) {
      throw new TypeError('TZ: no websocket url given and no page location to default to');
    }
    const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
    const rel = url || path;
    return scheme + '//' + loc.host + (rel.charAt(0) === '/' ? rel : '/' + rel);
  }

  /** `url` with `token=<token>` added to its query (a null/empty token adds nothing). */
  function withToken(url, token) {
    if (token === null || token === undefined || token === '') {
      return url;
    }
    return url + (url.indexOf('?') < 0 ? '?' : '&') + 'token=' + encodeURIComponent(String(token));
  }

  class TZ {
    /**
     * new TZ()                       connect to ws(s)://<page host>/ws
     * new TZ(url, callbacks)         the old form; url may be null/undefined
     * new TZ(callbacks)              callbacks only
     * new TZ(url, callbacks, options)
     *
     * `callbacks` maps a rule name to a function, exactly like `tz.on(name, fn)`.
     */
    constructor(url, callbacks, options) {
      if (url !== null && typeof url === 'object') {
        options = callbacks;
        callbacks = url;
        url = undefined;
      }
      this.options = Object.assign({}, DEFAULTS, options || {});
      this.url = resolveUrl(url, this.options.path);
      this.ws = null;
      this._handlers = new Map();   // name -> Set of functions
      this._pending = new Map();    // call id -> {resolve, reject, rule, timer}
      this._queue = [];             // [{text, id}] waiting for an open socket
      this._nextId = 1;
      this._attempt = 0;
      this._timer = null;
      this._closed = false;
      // Old pages assign these properties instead of subscribing.
      this.onopen = null;
      this.onclose = null;
      this.onerror = null;
      if (callbacks) {
        for (const name of Object.keys(callbacks)) {
          if (typeof callbacks[name] === 'function') {
            this.on(name, callbacks[name]);
          }
        }
      }
      this._connect();
    }

    /** True while the socket is open and messages go out at once. */
    get connected() {
      return this.ws !== null && this.ws.readyState === 1;
    }

    /**
     * Subscribe to a rule's incoming messages (`rule|a,b` calls fn('a', 'b'); a
     * JSON `data` message calls fn(data, msg)) or to an event: 'open', 'close'
     * (fn(closeEvent)), 'error' (fn(TZError)), 'message' (fn(rawText)).
     * Returns a function that unsubscribes.
     */
    on(name, fn) {
      if (typeof fn !== 'function') {
        throw new TypeError('TZ.on: expected a function for "' + name + '", got ' + typeof fn);
      }
      let set = this._handlers.get(name);
      if (!set) {
        set = new Set();
        this._handlers.set(name, set);
      }
      set.add(fn);
      return () => this.off(name, fn);
    }

    off(name, fn) {
      const set = this._handlers.get(name);
      if (set) {
        set.delete(fn);
      }
    }

    /** The old text form: send('get_hello', ['a', 'b']) sends `get_hello|a,b`. */
    send(method, args) {
      if (args === undefined || args === null) {
        args = [];
      } else if (!Array.isArray(args)) {
        args = [args];
      }
      return this._enqueue(String(method) + '|' + args.join(','), null);
    }

    /**
     * The JSON form: resolves with the handler's `result`, rejects with a
     * TZError (`code` as in docs/protocol.md, or 'disconnected', 'closed',
     * 'queue_full', 'timeout' from the client). `data` messages sent meanwhile
     * go to `on(rule, fn)` subscribers. The promise has the call's `id`.
     */
    call(rule) {
      const args = Array.prototype.slice.call(arguments, 1);
      const id = this._nextId++;
      let entry;
      const promise = new Promise((resolve, reject) => {
        entry = { resolve: resolve, reject: reject, rule: rule, timer: null, sent: false };
      });
      promise.id = id;
      this._pending.set(id, entry);
      if (this.options.callTimeout > 0) {
        entry.timer = root.setTimeout(() => {
          this._settle(id, new TZError('timeout', 'no reply to "' + rule + '" within ' +
            this.options.callTimeout + ' ms', rule, id));
        }, this.options.callTimeout);
      }
      if (this._closed) {
        this._settle(id, new TZError('closed', 'client closed', rule, id));
      } else if (!this._enqueue(JSON.stringify({ rule: rule, args: args, id: id }), id)) {
        this._settle(id, new TZError('queue_full', 'send queue full (' +
          this.options.queueLimit + ' messages waiting)', rule, id));
      }
      return promise;
    }

    /** Close for good: no more reconnects; waiting calls are rejected with 'closed'. */
    close(code, reason) {
      this._closed = true;
      if (this._timer !== null) {
        root.clearTimeout(this._timer);
        this._timer = null;
      }
      const queued = this._queue;
      this._queue = [];
      for (const item of queued) {
        if (item.id !== null) {
          this._settle(item.id, new TZError('closed', 'client closed', null, item.id));
        }
      }
      this._rejectSent('closed', 'client closed');
      if (this.ws !== null) {
        this.ws.close(code || 1000, reason || '');
      }
    }

    // -- internals ---------------------------------------------------------

    _connect() {
      this._timer = null;
      if (this._closed) {
        return;
      }
      if (typeof this.options.token !== 'function') {
        this._open(this.url);
        return;
      }
      // A fresh token for every attempt: an expired one is never sent twice.
      let pending;
      try {
        pending = Promise.resolve(this.options.token());
      } catch (e) {
        pending = Promise.reject(e);
      }
      pending.then((token) => {
        if (!this._closed) {
          this._open(withToken(this.url, token));
        }
      }, (e) => {
        this._emit('error', new TZError('token', 'cannot get a token: ' + (e && e.message)));
        this._scheduleReconnect();
      });
    }

    _open(url) {
      const Impl = this.options.WebSocket || root.WebSocket;
      let ws;
      try {
        ws = new Impl(url);
      } catch (e) {
        this._emit('error', new TZError('socket', 'cannot connect to ' + this.url + ': ' + e.message));
        this._scheduleReconnect();
        return;
      }
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      ws.onopen = () => this._onOpen(ws);
      ws.onmessage = (event) => this._onMessage(ws, event);
      ws.onerror = () => {
        if (ws === this.ws) {
          this._emit('error', new TZError('socket', 'websocket error on ' + this.url));
        }
      };
      ws.onclose = (event) => this._onClose(ws, event);
    }

    _onOpen(ws) {
      if (ws !== this.ws) {
        return;
      }
      this._attempt = 0;
      // Flush before the 'open' handlers run, so what they send goes out
      // behind what was queued earlier.
      const queued = this._queue;
      this._queue = [];
      for (const item of queued) {
        this._write(item);
      }
      this._emit('open');
    }

    _onClose(ws, event) {
      if (ws !== this.ws) {
        return;
      }
      this.ws = null;
      this._rejectSent('disconnected', 'connection closed (' + event.code + ')');
      this._emit('close', event);
      this._scheduleReconnect();
    }

    _scheduleReconnect() {
      if (this._closed || !this.options.reconnect || this._timer !== null) {
        return;
      }
      const delay = backoffDelay(this._attempt, this.options.minDelay, this.options.maxDelay,
        Math.random);
      this._attempt += 1;
      this._timer = root.setTimeout(() => this._connect(), delay);
    }

    _enqueue(text, id) {
      const item = { text: text, id: id };
      if (this._closed) {
        return false;
      }
      if (this.connected) {
        this._write(item);
        return true;
      }
      if (this._queue.length >= this.options.queueLimit) {
        return false;
      }
      this._queue.push(item);
      return true;
    }

    _write(item) {
      this.ws.send(item.text);
      if (item.id !== null && this._pending.has(item.id)) {
        this._pending.get(item.id).sent = true;
      }
    }

    // A call the server has seen can never be answered on a new connection.
    _rejectSent(code, message) {
      for (const [id, entry] of Array.from(this._pending)) {
        if (entry.sent) {
          this._settle(id, new TZError(code, message, entry.rule, id));
        }
      }
    }

    _settle(id, error, result) {
      const entry = this._pending.get(id);
      if (!entry) {
        return false;
      }
      this._pending.delete(id);
      if (entry.timer !== null) {
        root.clearTimeout(entry.timer);
      }
      if (error) {
        entry.reject(error);
      } else {
        entry.resolve(result);
      }
      return true;
    }

    _onMessage(ws, event) {
      if (ws !== this.ws) {
        return;
      }
      const text = event.data;
      this._emit('message', text);
      if (typeof text !== 'string') {
        return;
      }
      const msg = parseJson(text);
      if (msg !== null) {
        this._onJson(msg);
        return;
      }
      const parsed = parseText(text);
      // Event names are not rule names: `open|x` from a server is only a 'message'.
      if (parsed === null || (EVENTS.indexOf(parsed.name) >= 0 && parsed.name !== 'error')) {
        return;
      }
      if (parsed.name === 'error') {
        this._emit('error', parseTextError(text.slice(text.indexOf('|') + 1)));
        return;
      }
      this._emit(parsed.name, ...parsed.args);
    }

    _onJson(msg) {
      const id = msg.id === undefined ? null : msg.id;
      const rule = msg.rule === undefined ? null : msg.rule;
      if (msg.error !== undefined) {
        const err = msg.error || {};
        const error = new TZError(String(err.code || 'error'), String(err.message || err.code || ''),
          rule, id);
        if (id === null || !this._settle(id, error)) {
          this._emit('error', error);
        }
      } else if (Object.prototype.hasOwnProperty.call(msg, 'result')) {
        this._settle(id, null, msg.result);
      } else if (Object.prototype.hasOwnProperty.call(msg, 'data') && rule !== null &&
        EVENTS.indexOf(rule) < 0) {
        this._emit(rule, msg.data, msg);
      }
    }

    _emit(name, ...args) {
      const prop = { open: 'onopen', close: 'onclose', error: 'onerror' }[name];
      const fns = Array.from(this._handlers.get(name) || []);
      if (prop && typeof this[prop] === 'function') {
        fns.push(this[prop].bind(this));
      }
      for (const fn of fns) {
        try {
          fn(...args);
        } catch (e) {
          // One broken subscriber must not stop the others or the socket.
          if (typeof root.reportError === 'function') {
            root.reportError(e);
          } else if (root.console) {
            root.console.error(e);
          }
        }
      }
    }
  }

  TZ.Error = TZError;
  TZ.EVENTS = EVENTS;
  TZ.parseText = parseText;
  TZ.backoffDelay = backoffDelay;
  root.TZ = TZ;
})(typeof globalThis !== 'undefined' ? globalThis : this);
