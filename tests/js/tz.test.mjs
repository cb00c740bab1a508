// Pure tests of tranzit/static/tz.js: the script runs in a vm context with a
// fake WebSocket class and fake timers (tests/js/fake.mjs), so every decision
// (text split, JSON ids, queueing, backoff) is checked without a server or a
// browser. Protocol v2 (recovery) is in tz.recovery.test.mjs.
// Run: node --test tests/js/
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SOURCE, load, recorder } from './fake.mjs';

test('the script is ASCII, so it decodes the same whatever charset it is served with', () => {
  assert.match(SOURCE, /^[\x00-\x7f]*$/);
});

test('default url is the page origin /ws, wss on https; explicit urls are kept', () => {
  let env = load();
  assert.equal(new env.TZ().url, 'ws://example.test:3000/ws');
  assert.equal(env.last.url, 'ws://example.test:3000/ws');

  env = load({ location: { protocol: 'https:', host: 'tz.example' } });
  assert.equal(new env.TZ(null, {}).url, 'wss://tz.example/ws');
  assert.equal(new env.TZ(undefined, {}, { path: '/sock' }).url, 'wss://tz.example/sock');
  assert.equal(new env.TZ('/other').url, 'wss://tz.example/other');
  assert.equal(new env.TZ('https://h:1/ws').url, 'wss://h:1/ws');
  assert.equal(new env.TZ('ws://0.0.0.0:19719').url, 'ws://0.0.0.0:19719');
  assert.equal(env.last.url, 'ws://0.0.0.0:19719');

  env = load({ location: null });
  assert.equal(new env.TZ('ws://127.0.0.1:19719').url, 'ws://127.0.0.1:19719');
  assert.throws(() => new env.TZ(), /no websocket url given/);
});

test('text form: incoming messages are split on "," exactly like the server', () => {
  const env = load();
  const cb = recorder();
  const other = recorder();
  const raw = recorder();
  const tz = new env.TZ(null, { get_hello: cb, other });
  tz.on('message', raw);
  env.last.accept();

  env.last.receive('get_hello|HELLO!');
  env.last.receive('get_hello|a, b');
  env.last.receive('get_hello|');
  env.last.receive('get_hello|a|b');
  env.last.receive('get_hello|a,,b');
  env.last.receive('get_hello|Привет,世界,🚀');
  env.last.receive('no bar at all');
  env.last.receive('|empty name');
  env.last.receive('open|not an event');
  env.last.receive('{not json|x');

  assert.deepEqual(cb.calls, [
    ['HELLO!'],
    ['a', ' b'],
    [''],
    ['a|b'],
    ['a', '', 'b'],
    ['Привет', '世界', '🚀'],
  ]);
  assert.deepEqual(other.calls, []);
  assert.equal(raw.calls.length, 10);
  assert.equal(raw.calls[6][0], 'no bar at all');
});

test('send() writes the old text form', () => {
  const env = load();
  const tz = new env.TZ();
  env.last.accept();
  assert.equal(tz.send('get_hello', ['a', ' b']), true);
  tz.send('get_hello', []);
  tz.send('get_hello');
  tz.send('echo', ['Ünïcödé 中文 😀']);
  tz.send('one', 'scalar');
  assert.deepEqual(env.last.sent, ['get_hello|a, b', 'get_hello|', 'get_hello|',
    'echo|Ünïcödé 中文 😀', 'one|scalar']);
});

test('call() sends JSON with increasing ids and settles by id', async () => {
  const env = load();
  const tz = new env.TZ();
  const data = recorder();
  tz.on('count', data);
  env.last.accept();

  const first = tz.call('echo', 'привет 世界 🎉');
  const second = tz.call('count', 3, { deep: [1] });
  const third = tz.call('nope');
  assert.deepEqual(env.last.sent.map((t) => JSON.parse(t)), [
    { rule: 'echo', args: ['привет 世界 🎉'], id: 1 },
    { rule: 'count', args: [3, { deep: [1] }], id: 2 },
    { rule: 'nope', args: [], id: 3 },
  ]);
  assert.equal(first.id, 1);
  assert.equal(third.id, 3);

  // Replies arrive out of order; unrelated ids are ignored.
  env.last.receive(JSON.stringify({ id: 2, rule: 'count', data: 'one' }));
  env.last.receive(JSON.stringify({ id: 2, rule: 'count', data: 'two' }));
  env.last.receive(JSON.stringify({ id: 99, rule: 'echo', result: 'stray' }));
  env.last.receive(JSON.stringify({
    id: 3, rule: 'nope', error: { code: 'unknown_rule', message: 'no rule "nope"' },
  }));
  env.last.receive(' ' + JSON.stringify({ id: 1, rule: 'echo', result: 'привет 世界 🎉' }));
  env.last.receive(JSON.stringify({ id: 2, rule: 'count', result: null }));

  assert.equal(await first, 'привет 世界 🎉');
  assert.equal(await second, null);
  await assert.rejects(third, (err) => {
    assert.equal(err.name, 'TZError');
    assert.equal(err.code, 'unknown_rule');
    assert.equal(err.rule, 'nope');
    assert.equal(err.id, 3);
    assert.equal(err.message, 'no rule "nope"');
    return true;
  });
  assert.deepEqual(data.calls.map((args) => args[0]), ['one', 'two']);
  assert.equal(data.calls[0][1].id, 2);
});

test('errors: text form and unmatched JSON errors go to on("error") and callbacks.error', () => {
  const env = load();
  const errors = recorder();
  const tz = new env.TZ(null, { error: errors });
  const viaOn = recorder();
  tz.on('error', viaOn);
  env.last.accept();

  env.last.receive('error|unknown_rule,nope,no rule named "nope", sorry');
  env.last.receive('error|malformed,,message has no "|"');
  env.last.receive(JSON.stringify({ id: null, rule: null, error: { code: 'malformed', message: 'bad json' } }));

  assert.equal(errors.calls.length, 3);
  assert.equal(viaOn.calls.length, 3);
  const [first, second, third] = errors.calls.map((args) => args[0]);
  assert.deepEqual([first.code, first.rule, first.message],
    ['unknown_rule', 'nope', 'no rule named "nope", sorry']);
  assert.deepEqual([second.code, second.rule, second.message],
    ['malformed', null, 'message has no "|"']);
  assert.deepEqual([third.code, third.rule, third.message], ['malformed', null, 'bad json']);
});

test('messages sent while disconnected are queued, bounded, and flushed in order on open', async () => {
  const env = load();
  const tz = new env.TZ(null, null, { queueLimit: 3 });
  assert.equal(tz.connected, false);
  assert.equal(tz.send('a', ['1']), true);
  const call = tz.call('echo', 'x');
  assert.equal(tz.send('b', ['2']), true);
  assert.equal(tz.send('c', ['3']), false);
  await assert.rejects(tz.call('echo', 'y'), (err) => err.code === 'queue_full');

  const order = [];
  tz.on('open', () => {
    order.push('open');
    tz.send('from_open', []);
  });
  env.last.accept();
  assert.equal(tz.connected, true);
  assert.deepEqual(order, ['open']);
  assert.deepEqual(env.last.sent, ['a|1', '{"rule":"echo","args":["x"],"id":1}', 'b|2',
    'from_open|']);
  env.last.receive('{"id":1,"rule":"echo","result":"x"}');
  assert.equal(await call, 'x');
});

test('reconnect backoff doubles from minDelay, is capped at maxDelay, and resets after open', () => {
  for (const [random, expected] of [
    [0.999999, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]],
    [0, [250, 500, 1000, 2000, 4000, 7500, 7500, 7500]],
  ]) {
    const env = load({ random });
    const closes = recorder();
    const tz = new env.TZ();
    tz.on('close', closes);
    const delays = [];
    for (let i = 0; i < expected.length; i++) {
      env.last.drop();
      assert.equal(env.pendingTimers().length, 1, 'exactly one reconnect scheduled');
      delays.push(env.fireTimer());
    }
    assert.deepEqual(delays, expected);
    assert.equal(env.sockets.length, expected.length + 1);
    assert.equal(closes.calls.length, expected.length);

    env.last.accept();
    env.last.drop();
    assert.equal(env.fireTimer(), expected[0], 'backoff starts over after a successful open');
  }

  const env = load();
  for (let attempt = 0; attempt < 200; attempt++) {
    for (const r of [0, 0.25, 0.5, 0.999999]) {
      const d = env.TZ.backoffDelay(attempt, 500, 15000, () => r);
      assert.ok(d >= 250 && d <= 15000, `attempt ${attempt}, random ${r}: ${d}`);
    }
  }
});

test('a dropped connection rejects sent calls but keeps unsent ones for the next socket', async () => {
  const env = load();
  const tz = new env.TZ();
  const opens = recorder();
  tz.onopen = opens;  // the old property style still works
  env.last.accept();
  const sent = tz.call('slow');
  env.last.drop();
  await assert.rejects(sent, (err) => err.code === 'disconnected' && err.rule === 'slow');

  const queued = tz.call('later', 'é');
  env.fireTimer();
  env.last.drop();  // a failed attempt: the queued call was never sent, so it waits on
  env.fireTimer();
  env.last.accept();
  assert.deepEqual(env.last.sent, ['{"rule":"later","args":["é"],"id":2}']);
  env.last.receive('{"id":2,"rule":"later","result":"ok"}');
  assert.equal(await queued, 'ok');
  assert.equal(opens.calls.length, 2);
});

test('close() stops reconnecting and rejects waiting calls', async () => {
  const env = load();
  const tz = new env.TZ();
  const queued = tz.call('never');
  tz.close();
  await assert.rejects(queued, (err) => err.code === 'closed');
  assert.deepEqual(env.last.closedWith, [1000, '']);
  assert.equal(env.pendingTimers().length, 0);
  await assert.rejects(tz.call('after'), (err) => err.code === 'closed');
  assert.equal(tz.send('after', []), false);
  assert.equal(env.sockets.length, 1);

  // close() while a reconnect is scheduled cancels it.
  const env2 = load();
  const tz2 = new env2.TZ();
  env2.last.drop();
  assert.equal(env2.pendingTimers().length, 1);
  tz2.close();
  assert.equal(env2.pendingTimers().length, 0);
});

test('call timeout rejects, unsubscribe works, a throwing subscriber does not stop others', async () => {
  const env = load();
  const tz = new env.TZ(null, null, { callTimeout: 1000 });
  env.last.accept();
  const slow = tz.call('slow');
  env.fireTimer();
  await assert.rejects(slow, (err) => err.code === 'timeout');

  const seen = recorder();
  const off = tz.on('tick', seen);
  tz.on('tick', () => {
    throw new Error('subscriber bug');
  });
  const after = recorder();
  tz.on('tick', after);
  env.last.receive('tick|1');
  off();
  env.last.receive('tick|2');
  assert.deepEqual(seen.calls, [['1']]);
  assert.deepEqual(after.calls, [['1'], ['2']]);
  assert.equal(env.logged.length, 2);
  assert.throws(() => tz.on('tick', 'not a function'), /expected a function/);
});

test('token option: a fresh token on every attempt, sent as ?token=, and a failing one retried', async () => {
  const env = load();
  const tokens = ['first', 'sécond', null];
  let asked = 0;
  const errors = recorder();
  const tz = new env.TZ({ error: errors }, {
    path: '/ws?room=1',
    token: () => {
      asked += 1;
      if (asked === 3) {
        throw new Error('login expired');
      }
      return Promise.resolve(tokens[asked - 1]);
    },
  });
  const settle = () => new Promise((resolve) => setImmediate(resolve));
  await settle();
  assert.equal(env.last.url, 'ws://example.test:3000/ws?room=1&token=first');
  env.last.drop();
  env.fireTimer();
  await settle();
  assert.equal(env.sockets.length, 2);
  assert.equal(env.last.url, 'ws://example.test:3000/ws?room=1&token=s%C3%A9cond');
  env.last.drop();
  env.fireTimer();  // the token function throws: no socket, an error, another attempt
  await settle();
  assert.equal(env.sockets.length, 2);
  assert.ok(errors.calls.some(([e]) => e.code === 'token' && /login expired/.test(e.message)));
  assert.equal(env.pendingTimers().length, 1);
  tz.close();
});
