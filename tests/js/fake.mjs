// The harness of the tz.js tests: the script runs in a vm context with a fake
// WebSocket class and fake timers, driven by the test as the server would.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

export const SOURCE = readFileSync(new URL('../../tranzit/static/tz.js', import.meta.url), 'utf8');

export function load({ location = { protocol: 'http:', host: 'example.test:3000' }, random = 0.5 } = {}) {
  const sockets = [];
  const timers = [];
  const logged = [];

  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      // null when the client passed no second argument (the v1 handshake).
      this.protocols = arguments.length > 1 ? Array.from(protocols) : null;
      this.protocol = '';
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }

    send(text) {
      if (this.readyState !== 1) {
        throw new Error('send on a socket that is not open');
      }
      this.sent.push(text);
    }

    close(code, reason) {
      this.closedWith = [code, reason];
      this.readyState = 3;
    }

    // What the server side does, driven by the test. `protocol` is the
    // subprotocol the server selected ('' for none, as in browsers).
    accept(protocol = '') {
      this.protocol = protocol;
      this.readyState = 1;
      this.onopen({});
    }

    receive(data) {
      this.onmessage({ data });
    }

    // A `{"tz": ...}` frame or any other JSON object, as the server writes it.
    frame(obj) {
      this.receive(JSON.stringify(obj));
    }

    drop(code = 1006) {
      this.readyState = 3;
      this.onerror({});
      this.onclose({ code, reason: '', wasClean: false });
    }

    // A clean close started by the server, e.g. 1001 "reconnect" when it drains.
    serverClose(code, reason) {
      this.readyState = 3;
      this.onclose({ code, reason, wasClean: true });
    }
  }

  const context = {
    WebSocket: FakeWebSocket,
    console: { error: (e) => logged.push(e) },
    setTimeout: (fn, delay) => {
      timers.push({ fn, delay, cleared: false });
      return timers.length;
    },
    clearTimeout: (id) => {
      if (timers[id - 1]) {
        timers[id - 1].cleared = true;
      }
    },
    __random: () => random,
  };
  if (location) {
    context.location = location;
  }
  vm.createContext(context);
  vm.runInContext('Math.random = () => __random();', context);
  vm.runInContext(SOURCE, context, { filename: 'tz.js' });

  return {
    TZ: context.TZ,
    sockets,
    logged,
    get last() {
      return sockets[sockets.length - 1];
    },
    // Change what Math.random returns from now on.
    set random(value) {
      random = value;
    },
    pendingTimers: () => timers.filter((t) => !t.cleared && !t.ran),
    // Fire the earliest pending timer (the reconnect), returning its delay.
    fireTimer() {
      const t = timers.find((x) => !x.cleared && !x.ran);
      assert.ok(t, 'expected a pending timer');
      t.ran = true;
      t.fn();
      return t.delay;
    },
  };
}

export function recorder() {
  const calls = [];
  const fn = (...args) => calls.push(args);
  fn.calls = calls;
  return fn;
}

// A value made in the vm context, as plain data of this realm (deepEqual
// compares prototypes, and the vm's Object.prototype is another object).
export function plain(value) {
  return JSON.parse(JSON.stringify(value));
}
