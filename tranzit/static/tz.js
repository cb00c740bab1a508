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
 *
 * With a server that selects the `tranzit.2` subprotocol the client also keeps
 * the position of every group it was joined to and, after a reconnect, asks the
 * server to replay what it missed (`tz.resume`); see "Reconnects and recovery"
 * in docs/tzjs.md.
 */
(function (root) {
  'use strict';

  const EVENTS = ['open', 'close', 'error', 'message', 'recovery', 'presence'];

  const SUBPROTOCOL = 'tranzit.2';
  const RESUME_RULE = 'tz.resume';
  // Reasons a call fails on this side: the server may still have resumed the groups.
  const CLIENT_CODES = ['disconnected', 'closed', 'timeout', 'queue_full'];
  // Once a server selected tranzit.2, a failed attempt means it is down, not old;
  // every this-many failures one attempt goes without, in case it was rolled back.
  const FALLBACK_EVERY = 4;

  const DEFAULTS = {
    path: '/ws',          // used when no url is given
    reconnect: true,
    minDelay: 500,        // ms before the first reconnect attempt
    maxDelay: 15000,      // ms, the backoff never waits longer than this
    queueLimit: 100,      // messages kept while disconnected
    callTimeout: 0,       // ms; 0 waits for the server as long as the connection lives
    token: null,          // () => token or Promise of one: sent as ?token= on every (re)connect
    recover: true,        // ask for tranzit.2: group positions, replay after a reconnect
    drainDelay: 5000,     // ms; after a server's 1001 "reconnect" wait a random time up to this
    connectTimeout: 10000, // ms a socket may stay connecting before it is given up and retried
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

  /** Split `"<ms>-<seq>"` into its two digit strings (a bare `"<ms>"` has seq 0). */
  function splitOffset(offset) {
    const text = String(offset);
    const dash = text.indexOf('-');
    return dash < 0 ? [text, '0'] : [text.slice(0, dash), text.slice(dash + 1)];
  }

  /** Compare two non-negative integers written in decimal, exactly at any size. */
  function compareDigits(a, b) {
    a = a.replace(/^0+(?=.)/, '');
    b = b.replace(/^0+(?=.)/, '');
    if (a.length !== b.length) {
      return a.length < b.length ? -1 : 1;
    }
    return a < b ? -1 : (a > b ? 1 : 0);
  }

  /**
   * -1, 0 or 1 as group offset `a` is before, equal to or after `b`: offsets are
   * Redis stream ids `"<ms>-<seq>"`, ordered as the pair of integers (ms, seq),
   * so `"9-0"` comes before `"10-0"` although it sorts after it as text.
   */
  function compareOffsets(a, b) {
    const x = splitOffset(a);
    const y = splitOffset(b);
    return compareDigits(x[0], y[0]) || compareDigits(x[1], y[1]);
  }

  /** obj[key] = value, also for a key such as `__proto__` (group names come from the server). */
  function setKey(obj, key, value) {
    Object.defineProperty(obj, key,
      { value: value, enumerable: true, writable: true, configurable: true });
    return obj;
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
      // Protocol v2 state. _joined: group -> {epoch, offset, ticket}, the join
      // point; _seen: group -> {epoch, offset} of the last message delivered.
      this._v2 = false;             // the open socket speaks tranzit.2
      this._v2Seen = false;         // some server selected tranzit.2 for this client
      this._askV2 = this.options.recover;
      this._asked = false;          // the current socket asked for tranzit.2
      this._opened = false;         // the current socket opened
      this._v2Failures = 0;         // attempts asking for tranzit.2 that failed, since the last open
      this._joined = new Map();
      this._seen = new Map();
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

    /** {group: {epoch, offset}}: where each joined group would resume now (a copy). */
    get groups() {
      const snapshot = {};
      for (const group of this._joined.keys()) {
        const point = this._resumePoint(group);
        setKey(snapshot, group, { epoch: point.epoch, offset: point.offset });
      }
      return snapshot;
    }

    /**
     * Subscribe to a rule's incoming messages (`rule|a,b` calls fn('a', 'b'); a
     * JSON `data` message calls fn(data, msg)) or to an event: 'open', 'close'
     * (fn(closeEvent)), 'error' (fn(TZError)), 'message' (fn(rawText)),
     * 'recovery' (fn({group, recovered, replayed})), 'presence' (fn({group, join}
     * or {group, leave})). Returns a function that unsubscribes.
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
      this._clearConnectTimer();
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
      this._asked = this._askV2;
      this._opened = false;
      try {
        ws = this._asked ? new Impl(url, [SUBPROTOCOL]) : new Impl(url);
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
      if (this.options.connectTimeout > 0) {
        // A proxy may sit on an upgrade to a replica that just died: give up and retry.
        this._connectTimer = root.setTimeout(() => this._connectTimedOut(ws),
          this.options.connectTimeout);
      }
    }

    _connectTimedOut(ws) {
      this._connectTimer = null;
      if (ws !== this.ws || ws.readyState !== 0) {
        return;
      }
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close();
      } catch (e) {
        // closing a socket that is still connecting may throw in some engines
      }
      this._timedOut = true;
      this._emit('error', new TZError('timeout', 'no connection to ' + this.url + ' within ' +
        this.options.connectTimeout + ' ms'));
      this._onClose(ws, { code: 1006, reason: 'connect timeout', wasClean: false });
    }

    _clearConnectTimer() {
      if (this._connectTimer) {
        root.clearTimeout(this._connectTimer);
      }
      this._connectTimer = null;
    }

    _onOpen(ws) {
      if (ws !== this.ws) {
        return;
      }
      this._clearConnectTimer();
      this._attempt = 0;
      this._opened = true;
      this._v2Failures = 0;
      // An old server selects no subprotocol: then this is a v1 connection.
      this._v2 = this._asked && ws.protocol === SUBPROTOCOL;
      if (this._v2) {
        this._v2Seen = true;
        this._resume();
      } else {
        this._loseGroups();
      }
      // Flush before the 'open' handlers run, so what they send goes out
      // behind what was queued earlier (and behind the resume call).
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
      this._clearConnectTimer();
      this.ws = null;
      this._v2 = false;
      this._chooseSubprotocol();
      this._rejectSent('disconnected', 'connection closed (' + event.code + ')');
      this._emit('close', event);
      this._scheduleReconnect(event.code === 1001 && event.reason === 'reconnect');
    }

    // Chromium fails the handshake when it asked for a subprotocol and the
    // server selected none, so against a pre-v2 server an attempt that asks
    // can never open: after it fails, the next attempt does not ask.
    _chooseSubprotocol() {
      if (!this.options.recover) {
        return;
      }
      if (this._timedOut) {  // no answer at all says nothing about the subprotocol
        this._timedOut = false;
        return;
      }
      if (this._opened || !this._asked) {
        this._askV2 = true;
        return;
      }
      this._v2Failures += 1;
      this._askV2 = this._v2Seen && this._v2Failures % FALLBACK_EVERY !== 0;
    }

    // A draining server (1001 "reconnect") is going away on purpose and others
    // are up: come back soon, but spread over drainDelay, not all at once.
    _scheduleReconnect(drained) {
      if (this._closed || !this.options.reconnect || this._timer !== null) {
        return;
      }
      let delay;
      if (drained) {
        // Not counted: a failure after it backs off from minDelay.
        delay = Math.round(Math.random() * this.options.drainDelay);
      } else {
        delay = backoffDelay(this._attempt, this.options.minDelay, this.options.maxDelay,
          Math.random);
        this._attempt += 1;
      }
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
      const msg = typeof text === 'string' ? parseJson(text) : null;
      if (msg !== null && this._v2 && typeof msg.tz === 'string') {
        this._onFrame(msg);
        return;
      }
      this._dispatch(text, msg);
    }

    // One incoming message, `msg` being its JSON form or null.
    _dispatch(text, msg) {
      this._emit('message', text);
      if (msg !== null) {
        this._onJson(msg);
        return;
      }
      if (typeof text !== 'string') {
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

    // -- protocol v2 --------------------------------------------------------

    // A `{"tz": ...}` frame; a kind this client does not know is ignored.
    _onFrame(frame) {
      const group = frame.group;
      if (frame.tz === 'msg') {
        this._onGroupMessage(frame);
      } else if (frame.tz === 'joined') {
        this._setJoinPoint(group, frame.epoch, frame.offset, frame.ticket);
      } else if (frame.tz === 'left') {
        this._forget(group);
      } else if (frame.tz === 'recovery') {
        this._onRecovery(frame);
      } else if (frame.tz === 'presence') {
        this._emit('presence', frame.join !== undefined ? { group: group, join: frame.join }
          : { group: group, leave: frame.leave });
      }
    }

    // The new join point after a resume, with a fresh ticket (tickets expire).
    // Without a position (the server had no history to go by) the old one stays.
    _onRecovery(frame) {
      const group = frame.group;
      const joined = this._joined.get(group);
      const ticket = typeof frame.ticket === 'string' ? frame.ticket : (joined ? joined.ticket : null);
      if (typeof frame.offset === 'string' && ticket !== null) {
        this._setJoinPoint(group, frame.epoch, frame.offset, ticket);
      }
      this._emit('recovery',
        { group: group, recovered: frame.recovered === true, replayed: Number(frame.replayed) || 0 });
    }

    // Replayed and live messages can overlap (and a message can be replayed on
    // two reconnects): what was delivered once is dropped.
    _onGroupMessage(frame) {
      const group = frame.group;
      const seen = this._seen.get(group);
      if (seen && seen.epoch === frame.epoch && compareOffsets(frame.offset, seen.offset) <= 0) {
        return;
      }
      this._seen.set(group, { epoch: frame.epoch, offset: frame.offset });
      const joined = this._joined.get(group);
      if (joined && joined.epoch !== frame.epoch) {
        // History was lost: the old join point means nothing in the new epoch.
        this._joined.set(group, { epoch: frame.epoch, offset: frame.offset, ticket: joined.ticket });
      }
      if (typeof frame.data === 'string') {
        this._dispatch(frame.data, parseJson(frame.data));
      }
    }

    // A join point only says where to resume: it never hides a later message,
    // so it moves `seen` only when the epoch changed (the old one is void).
    _setJoinPoint(group, epoch, offset, ticket) {
      const seen = this._seen.get(group);
      if (seen && seen.epoch !== epoch) {
        this._seen.delete(group);
      }
      this._joined.set(group, { epoch: epoch, offset: offset, ticket: ticket });
    }

    _forget(group) {
      this._joined.delete(group);
      this._seen.delete(group);
    }

    // The later of the join point and the last message delivered (same epoch).
    _resumePoint(group) {
      const joined = this._joined.get(group);
      const seen = this._seen.get(group);
      return seen && compareOffsets(seen.offset, joined.offset) > 0 ? seen : joined;
    }

    // Sent on every v2 open before anything else, so the replay comes first.
    _resume() {
      if (this._joined.size === 0) {
        return;
      }
      const asked = new Map();
      const positions = {};
      for (const [group, joined] of this._joined) {
        const point = this._resumePoint(group);
        asked.set(group, joined.ticket);
        setKey(positions, group, { epoch: point.epoch, offset: point.offset, ticket: joined.ticket });
      }
      this.call(RESUME_RULE, positions).then((result) => {
        for (const group of Object.keys(result || {})) {
          if (result[group] === 'refused') {
            this._lose(group, asked.get(group));
          }
        }
      }, (err) => {
        // The server answered with an error: it re-joined none of them.
        if (CLIENT_CODES.indexOf(err.code) < 0) {
          for (const [group, ticket] of asked) {
            this._lose(group, ticket);
          }
        }
      });
    }

    // Forget a group the server did not re-join and tell the page (it has a gap),
    // unless it was joined again meanwhile (a new ticket).
    _lose(group, ticket) {
      const joined = this._joined.get(group);
      if (joined && joined.ticket === ticket) {
        this._forget(group);
        this._emit('recovery', { group: group, recovered: false, replayed: 0 });
      }
    }

    // A v1 connection cannot resume: every remembered group has a gap.
    _loseGroups() {
      for (const [group, joined] of Array.from(this._joined)) {
        this._lose(group, joined.ticket);
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
  TZ.compareOffsets = compareOffsets;
  root.TZ = TZ;
})(typeof globalThis !== 'undefined' ? globalThis : this);
