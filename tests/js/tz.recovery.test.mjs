// tz.js protocol v2 (the tranzit.2 subprotocol): group positions, duplicates,
// resume on reconnect, recovery and presence events, drain reconnects.
// The fake server is driven by hand (tests/js/fake.mjs). Run: node --test tests/js/
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { load, plain, recorder } from './fake.mjs';

const V2 = 'tranzit.2';

// A connected v2 client with `group` joined at (epoch, offset).
function joinedClient({ callbacks = {}, options = {}, group = 'room', epoch = 'e1', offset = '100-0',
  ticket = 't-room', random } = {}) {
  const env = load(random === undefined ? {} : { random });
  const tz = new env.TZ(null, callbacks, options);
  env.last.accept(V2);
  env.last.frame({ tz: 'joined', group, epoch, offset, ticket });
  return { env, tz };
}

function msg(group, epoch, offset, data) {
  return { tz: 'msg', group, epoch, offset, data };
}

const sentJson = (socket) => socket.sent.map((text) => JSON.parse(text));

test('compareOffsets orders "<ms>-<seq>" as a pair of integers, not as text', () => {
  const { TZ } = load();
  assert.equal(TZ.compareOffsets('9-0', '10-0'), -1);
  assert.equal(TZ.compareOffsets('10-0', '9-0'), 1);
  assert.equal(TZ.compareOffsets('1733-2', '1733-10'), -1);
  assert.equal(TZ.compareOffsets('1733-10', '1733-10'), 0);
  assert.equal(TZ.compareOffsets('1733', '1733-0'), 0);
  assert.equal(TZ.compareOffsets('0-0', '0-1'), -1);
  // Exact beyond 2**53, where Number() would call these equal.
  assert.equal(TZ.compareOffsets('1-18446744073709551615', '1-18446744073709551614'), 1);
  assert.equal(TZ.compareOffsets('1734000000000-5', '1733999999999-99'), 1);
});

test('recover: false opens exactly as before: no subprotocol asked, frames are plain JSON', () => {
  const env = load();
  const tz = new env.TZ(null, null, { recover: false });
  assert.equal(env.last.protocols, null, 'new WebSocket(url) with one argument');
  const raw = recorder();
  const recovery = recorder();
  tz.on('message', raw);
  tz.on('recovery', recovery);
  env.last.accept();
  const text = JSON.stringify(msg('room', 'e1', '1-0', 'get_hello|HELLO!'));
  env.last.receive(text);
  assert.deepEqual(raw.calls, [[text]]);
  env.last.drop();
  env.fireTimer();
  assert.equal(env.last.protocols, null, 'a failed attempt changes nothing either');
});

test('v1 when the server selects no subprotocol: tz frames are ordinary messages, no resume', () => {
  const env = load();
  const hello = recorder();
  const raw = recorder();
  const tz = new env.TZ(null, { get_hello: hello });
  tz.on('message', raw);
  assert.deepEqual(env.last.protocols, [V2]);
  env.last.accept('');  // an old server

  const joined = JSON.stringify({ tz: 'joined', group: 'room', epoch: 'e1', offset: '1-0', ticket: 't' });
  const frame = JSON.stringify(msg('room', 'e1', '2-0', 'get_hello|framed'));
  env.last.receive(joined);
  env.last.receive(frame);
  env.last.receive('get_hello|bare');
  assert.deepEqual(raw.calls, [[joined], [frame], ['get_hello|bare']]);
  assert.deepEqual(hello.calls, [['bare']]);
  assert.deepEqual(plain(tz.groups), {});

  env.last.drop();
  env.fireTimer();
  env.last.accept('');
  assert.deepEqual(env.last.sent, [], 'nothing to resume on a v1 connection');
});

test('against a server that cannot select tranzit.2 (Chromium fails that handshake) the next attempt does not ask', () => {
  const env = load();
  const tz = new env.TZ();
  const opens = recorder();
  tz.on('open', opens);
  assert.deepEqual(env.last.protocols, [V2]);
  env.last.drop();  // what Chromium reports for a handshake without Sec-WebSocket-Protocol
  env.fireTimer();
  assert.equal(env.last.protocols, null);
  env.last.accept();
  assert.equal(opens.calls.length, 1);

  // That server may be upgraded by the next reconnect: ask again, then fall back again.
  env.last.drop();
  env.fireTimer();
  assert.deepEqual(env.last.protocols, [V2]);
  env.last.drop();
  env.fireTimer();
  assert.equal(env.last.protocols, null);
  env.last.drop();  // down, not old: the next attempt asks again
  env.fireTimer();
  assert.deepEqual(env.last.protocols, [V2]);
  env.last.accept(V2);
  assert.equal(opens.calls.length, 2);

  // Once a server selected tranzit.2 a failure means it is down: keep asking,
  // but every fourth failed attempt goes without (a rolled-back server).
  env.last.drop();
  const asked = [];
  for (let i = 0; i < 9; i++) {
    env.fireTimer();
    asked.push(env.last.protocols === null ? 'v1' : 'v2');
    env.last.drop();
  }
  assert.deepEqual(asked, ['v2', 'v2', 'v2', 'v2', 'v1', 'v2', 'v2', 'v2', 'v2']);
});

test('a msg frame is dispatched exactly like the message it carries, text and JSON form', () => {
  const env = load();
  const hello = recorder();
  const count = recorder();
  const errors = recorder();
  const raw = recorder();
  const tz = new env.TZ(null, { get_hello: hello, count, error: errors });
  tz.on('message', raw);
  env.last.accept(V2);
  assert.equal(env.last.protocol, V2);

  env.last.frame({ tz: 'joined', group: 'room', epoch: 'e1', offset: '1-0', ticket: 't' });
  env.last.frame(msg('room', 'e1', '2-0', 'get_hello|a, b'));
  env.last.frame(msg('room', 'e1', '3-0', JSON.stringify({ rule: 'count', data: [1, 'é'] })));
  env.last.frame(msg('room', 'e1', '4-0', 'error|boom,get_hello,it broke, badly'));
  env.last.frame(msg('room', 'e1', '5-0', 'HELLO!'));
  env.last.frame(msg('room', 'e1', '6-0', 'open|not an event'));
  env.last.receive('get_hello|bare');  // a pre-16 replica's group message: no position
  env.last.frame({ tz: 'something_new', group: 'room' });  // a later server's frame: ignored

  assert.deepEqual(hello.calls, [['a', ' b'], ['bare']]);
  assert.deepEqual(plain(count.calls.map((args) => args[0])), [[1, 'é']]);
  assert.equal(count.calls[0][1].rule, 'count');
  assert.equal(errors.calls.length, 1);
  assert.deepEqual([errors.calls[0][0].code, errors.calls[0][0].message], ['boom', 'it broke, badly']);
  // Old pages see the texts they always saw; the tz envelopes and control frames never.
  assert.deepEqual(raw.calls.map((args) => args[0]), ['get_hello|a, b', '{"rule":"count","data":[1,"é"]}',
    'error|boom,get_hello,it broke, badly', 'HELLO!', 'open|not an event', 'get_hello|bare']);
});

test('duplicates are dropped: the same offset twice, a lower offset; offsets compare as numbers', () => {
  const hello = recorder();
  const { env, tz } = joinedClient({ callbacks: { get_hello: hello }, offset: '5-0' });
  for (const [offset, text] of [['9-0', 'a'], ['9-0', 'a again'], ['10-0', 'b'], ['9-5', 'old'],
    ['10-0', 'b again'], ['10-1', 'c'], ['2-0', 'very old']]) {
    env.last.frame(msg('room', 'e1', offset, 'get_hello|' + text));
  }
  assert.deepEqual(hello.calls, [['a'], ['b'], ['c']]);
  assert.deepEqual(plain(tz.groups), { room: { epoch: 'e1', offset: '10-1' } });

  // Per group: another group's offsets are its own.
  env.last.frame({ tz: 'joined', group: 'lobby', epoch: 'e1', offset: '1-0', ticket: 't-lobby' });
  env.last.frame(msg('lobby', 'e1', '3-0', 'get_hello|lobby'));
  assert.deepEqual(hello.calls.at(-1), ['lobby']);
});

test('the join point is a resume point, not a seen marker: an older msg after joined is shown', () => {
  const hello = recorder();
  const { env, tz } = joinedClient({ callbacks: { get_hello: hello }, offset: '100-0' });
  env.last.frame(msg('room', 'e1', '99-0', 'get_hello|before the join point'));
  env.last.frame(msg('room', 'e1', '100-0', 'get_hello|at the join point'));
  assert.deepEqual(hello.calls, [['before the join point'], ['at the join point']]);
  // The resume point is the later of the two: here the join point.
  assert.deepEqual(plain(tz.groups), { room: { epoch: 'e1', offset: '100-0' } });

  // A recovery frame moves the join point too, and it hides nothing either.
  env.last.frame({ tz: 'recovery', group: 'room', recovered: true, replayed: 0, epoch: 'e1', offset: '200-0' });
  env.last.frame(msg('room', 'e1', '150-0', 'get_hello|after recovery'));
  assert.deepEqual(hello.calls.at(-1), ['after recovery']);
  assert.deepEqual(plain(tz.groups), { room: { epoch: 'e1', offset: '200-0' } });
});

test('a new epoch resets the dedupe: its low offsets are new messages', () => {
  const hello = recorder();
  const { env, tz } = joinedClient({ callbacks: { get_hello: hello }, offset: '100-0' });
  env.last.frame(msg('room', 'e1', '150-0', 'get_hello|old epoch'));
  env.last.frame(msg('room', 'e2', '3-0', 'get_hello|new epoch'));  // Redis restarted empty
  env.last.frame(msg('room', 'e2', '3-0', 'get_hello|new epoch again'));
  env.last.frame(msg('room', 'e2', '2-0', 'get_hello|new epoch, older'));
  assert.deepEqual(hello.calls, [['old epoch'], ['new epoch']]);
  assert.deepEqual(plain(tz.groups), { room: { epoch: 'e2', offset: '3-0' } });

  // A join point in another epoch voids what was seen: 1-0 in e3 is new.
  env.last.frame({ tz: 'recovery', group: 'room', recovered: false, replayed: 0, epoch: 'e3', offset: '0-5' });
  assert.deepEqual(plain(tz.groups), { room: { epoch: 'e3', offset: '0-5' } });
  env.last.frame(msg('room', 'e3', '0-1', 'get_hello|e3'));
  assert.deepEqual(hello.calls.at(-1), ['e3']);
  assert.deepEqual(plain(tz.groups), { room: { epoch: 'e3', offset: '0-5' } });
});

test('on reconnect tz.resume goes first, with resume points and tickets, before queued messages', async () => {
  const { env, tz } = joinedClient({ offset: '100-0', ticket: 'T1' });
  env.last.frame({ tz: 'joined', group: 'lobby', epoch: 'e1', offset: '40-0', ticket: 'T2' });
  env.last.frame(msg('room', 'e1', '120-3', 'x|seen'));   // room resumes after what it saw
  env.last.frame(msg('lobby', 'e1', '39-0', 'x|older'));  // lobby after its join point
  assert.deepEqual(plain(tz.groups), {
    room: { epoch: 'e1', offset: '120-3' }, lobby: { epoch: 'e1', offset: '40-0' },
  });
  env.last.drop();

  tz.send('queued', ['1']);
  const queued = tz.call('echo', 'q');
  tz.on('open', () => tz.send('from_open', []));
  env.fireTimer();
  assert.deepEqual(env.last.protocols, [V2]);
  env.last.accept(V2);
  const [resume, ...rest] = env.last.sent;
  assert.deepEqual(JSON.parse(resume), {
    rule: 'tz.resume',
    args: [{
      room: { epoch: 'e1', offset: '120-3', ticket: 'T1' },
      lobby: { epoch: 'e1', offset: '40-0', ticket: 'T2' },
    }],
    id: 2,
  });
  assert.deepEqual(rest, ['queued|1', '{"rule":"echo","args":["q"],"id":1}', 'from_open|']);

  env.last.frame({ id: 2, rule: 'tz.resume', result: { room: true, lobby: false } });
  env.last.frame({ id: 1, rule: 'echo', result: 'q' });
  assert.equal(await queued, 'q');
  assert.deepEqual(Object.keys(plain(tz.groups)), ['room', 'lobby']);
});

test('replayed messages, then a recovery event; recovered false means a gap', () => {
  const hello = recorder();
  const recovery = recorder();
  const { env, tz } = joinedClient({ callbacks: { get_hello: hello, recovery }, offset: '10-0' });
  env.last.frame(msg('room', 'e1', '11-0', 'get_hello|live 1'));
  env.last.drop();
  env.fireTimer();
  env.last.accept(V2);
  assert.equal(sentJson(env.last)[0].args[0].room.offset, '11-0');

  // The server replays 11-0 (already seen) to 13-0, then a live copy of 13-0 arrives.
  for (const offset of ['11-0', '12-0', '13-0']) {
    env.last.frame(msg('room', 'e1', offset, 'get_hello|' + offset));
  }
  env.last.frame({ tz: 'recovery', group: 'room', recovered: true, replayed: 3, epoch: 'e1', offset: '13-0' });
  env.last.frame(msg('room', 'e1', '13-0', 'get_hello|13-0'));
  env.last.frame(msg('room', 'e1', '14-0', 'get_hello|live 2'));
  assert.deepEqual(hello.calls, [['live 1'], ['12-0'], ['13-0'], ['live 2']]);
  assert.deepEqual(plain(recovery.calls), [[{ group: 'room', recovered: true, replayed: 3 }]]);

  // Too long away: nothing replayed, a new join point, and the page is told.
  env.last.drop();
  env.fireTimer();
  env.last.accept(V2);
  env.last.frame({ tz: 'recovery', group: 'room', recovered: false, replayed: 0, epoch: 'e1', offset: '900-0' });
  assert.deepEqual(plain(recovery.calls.at(-1)), [{ group: 'room', recovered: false, replayed: 0 }]);
  assert.deepEqual(plain(tz.groups), { room: { epoch: 'e1', offset: '900-0' } });
  env.last.frame({ id: 3, rule: 'tz.resume', result: { room: false } });
  assert.deepEqual(Object.keys(plain(tz.groups)), ['room'], 'false keeps the group: it was re-joined');
});

test('"refused" forgets the group and reports a gap; a server error forgets all; a drop keeps them', async () => {
  const recovery = recorder();
  const { env, tz } = joinedClient({ callbacks: { recovery }, ticket: 'T1' });
  env.last.frame({ tz: 'joined', group: 'lobby', epoch: 'e1', offset: '1-0', ticket: 'T2' });
  env.last.drop();
  env.fireTimer();
  env.last.accept(V2);
  env.last.frame({ id: 1, rule: 'tz.resume', result: { room: 'refused', lobby: true } });
  await Promise.resolve();
  assert.deepEqual(plain(recovery.calls), [[{ group: 'room', recovered: false, replayed: 0 }]]);
  assert.deepEqual(Object.keys(plain(tz.groups)), ['lobby']);

  // Dropped while the resume call was out: the groups are kept and asked for again.
  env.last.drop();
  env.fireTimer();
  env.last.accept(V2);
  assert.deepEqual(Object.keys(sentJson(env.last)[0].args[0]), ['lobby']);
  env.last.drop();
  await Promise.resolve();
  assert.deepEqual(Object.keys(plain(tz.groups)), ['lobby']);

  env.fireTimer();
  env.last.accept(V2);
  const id = sentJson(env.last)[0].id;
  env.last.frame({ id, rule: 'tz.resume', error: { code: 'too_many_tasks', message: 'busy' } });
  await Promise.resolve();
  assert.deepEqual(plain(tz.groups), {});
  assert.deepEqual(plain(recovery.calls.at(-1)), [{ group: 'lobby', recovered: false, replayed: 0 }]);
  assert.equal(env.logged.length, 0, 'no unhandled errors');

  // With nothing joined, a reconnect sends no resume at all.
  env.last.drop();
  env.fireTimer();
  env.last.accept(V2);
  assert.deepEqual(env.last.sent, []);
});

test('a refusal does not forget a group joined again meanwhile (a new ticket)', async () => {
  const { env, tz } = joinedClient({ ticket: 'old' });
  env.last.drop();
  env.fireTimer();
  env.last.accept(V2);
  env.last.frame({ tz: 'joined', group: 'room', epoch: 'e1', offset: '500-0', ticket: 'new' });
  env.last.frame({ id: 1, rule: 'tz.resume', result: { room: 'refused' } });
  await Promise.resolve();
  assert.deepEqual(plain(tz.groups), { room: { epoch: 'e1', offset: '500-0' } });
});

test('left forgets the group; a v1 reconnect reports every remembered group as a gap', () => {
  const recovery = recorder();
  const { env, tz } = joinedClient({ callbacks: { recovery } });
  env.last.frame({ tz: 'joined', group: 'lobby', epoch: 'e1', offset: '1-0', ticket: 'T2' });
  env.last.frame({ tz: 'left', group: 'room' });
  assert.deepEqual(Object.keys(plain(tz.groups)), ['lobby']);

  env.last.drop();
  env.fireTimer();
  env.last.accept('');  // a replica of the old version answered
  assert.deepEqual(env.last.sent, []);
  assert.deepEqual(plain(recovery.calls), [[{ group: 'lobby', recovered: false, replayed: 0 }]]);
  assert.deepEqual(plain(tz.groups), {});
});

test('tz.groups is a snapshot, and any group name works, __proto__ included', () => {
  const { env, tz } = joinedClient({ group: '__proto__', ticket: 'T' });
  const snapshot = tz.groups;
  assert.ok(Object.prototype.hasOwnProperty.call(snapshot, '__proto__'));
  snapshot.__proto__.offset = 'changed';
  assert.deepEqual(plain(tz.groups.__proto__), { epoch: 'e1', offset: '100-0' });
  env.last.drop();
  env.fireTimer();
  env.last.accept(V2);
  assert.equal(env.last.sent[0],
    '{"rule":"tz.resume","args":[{"__proto__":{"epoch":"e1","offset":"100-0","ticket":"T"}}],"id":1}');
});

test('presence frames become presence events; servers cannot fake recovery or presence', () => {
  const presence = recorder();
  const recovery = recorder();
  const raw = recorder();
  const { env, tz } = joinedClient({ callbacks: { presence, recovery } });
  tz.on('message', raw);
  env.last.frame({ tz: 'presence', group: 'room', join: { id: 'c1', user: { name: 'Ёж' } } });
  env.last.frame({ tz: 'presence', group: 'room', leave: { id: 'c1', user: { name: 'Ёж' } } });
  assert.deepEqual(plain(presence.calls), [
    [{ group: 'room', join: { id: 'c1', user: { name: 'Ёж' } } }],
    [{ group: 'room', leave: { id: 'c1', user: { name: 'Ёж' } } }],
  ]);
  assert.equal(raw.calls.length, 0, 'control frames are not messages');

  env.last.receive('presence|x');
  env.last.receive('recovery|x');
  env.last.frame({ rule: 'recovery', data: 'x' });
  env.last.frame(msg('room', 'e1', '200-0', 'presence|y'));
  assert.equal(presence.calls.length, 2);
  assert.equal(recovery.calls.length, 0);
  assert.equal(raw.calls.length, 4);
});

test('a 1001 "reconnect" close (server drain) waits a random time up to drainDelay, not the backoff', () => {
  const env = load({ random: 0.5 });
  const tz = new env.TZ(null, null, { drainDelay: 8000 });
  env.last.accept(V2);
  for (let i = 0; i < 3; i++) {  // grow the backoff first: 3 failed attempts
    env.last.drop();
    env.fireTimer();
  }
  env.last.accept(V2);
  env.last.serverClose(1001, 'reconnect');
  assert.equal(env.fireTimer(), 4000);
  env.last.accept(V2);  // it reached a server that drains too
  env.random = 0;
  env.last.serverClose(1001, 'reconnect');
  assert.equal(env.fireTimer(), 0);
  env.random = 0.999999;
  env.last.drop();  // the backoff starts over after a drain
  assert.equal(env.fireTimer(), 500);

  env.last.accept(V2);
  env.random = 0;
  env.last.serverClose(1001, 'going away');  // another reason: the usual backoff
  assert.equal(env.fireTimer(), 250);
  tz.close();

  const byDefault = load({ random: 0.999999 });
  new byDefault.TZ();
  byDefault.last.accept(V2);
  byDefault.last.serverClose(1001, 'reconnect');
  assert.equal(byDefault.fireTimer(), 5000);

  const never = load();
  new never.TZ(null, null, { reconnect: false });
  never.last.accept();
  never.last.serverClose(1001, 'reconnect');
  assert.equal(never.pendingTimers().length, 0);
});

test('a recovery frame brings a fresh ticket; one without a position keeps the old point', () => {
  const recovery = recorder();
  const { env, tz } = joinedClient({ callbacks: { recovery }, offset: '10-0', ticket: 'T1' });
  env.last.drop();
  env.fireTimer();
  env.last.accept(V2);
  env.last.frame({ tz: 'recovery', group: 'room', recovered: true, replayed: 0, epoch: 'e1', offset: '20-0',
    ticket: 'T2' });
  env.last.frame({ id: 1, rule: 'tz.resume', result: { room: true } });

  // The server had no history to go by (its backend was down): live from now on.
  env.last.drop();
  env.fireTimer();
  env.last.accept(V2);
  assert.deepEqual(sentJson(env.last)[0].args[0], { room: { epoch: 'e1', offset: '20-0', ticket: 'T2' } });
  env.last.frame({ tz: 'recovery', group: 'room', recovered: false, replayed: 0 });
  assert.deepEqual(plain(recovery.calls.at(-1)), [{ group: 'room', recovered: false, replayed: 0 }]);
  assert.deepEqual(plain(tz.groups), { room: { epoch: 'e1', offset: '20-0' } });

  // Server code may join with a position itself: a recovery frame, no joined frame before it.
  env.last.frame({ tz: 'recovery', group: 'lobby', recovered: true, replayed: 2, epoch: 'e1', offset: '7-0',
    ticket: 'T3' });
  env.last.frame({ tz: 'recovery', group: 'nowhere', recovered: false, replayed: 0, epoch: 'e1', offset: '1-0' });
  assert.deepEqual(plain(tz.groups), {
    room: { epoch: 'e1', offset: '20-0' }, lobby: { epoch: 'e1', offset: '7-0' },
  });
  env.last.drop();
  env.fireTimer();
  env.last.accept(V2);
  assert.equal(sentJson(env.last)[0].args[0].lobby.ticket, 'T3');
});

test('a socket still connecting after connectTimeout is given up and retried, still asking for v2', () => {
  const env = load();
  const errors = [];
  const tz = new env.TZ(null, { error: (e) => errors.push(e.code) }, { connectTimeout: 3000 });
  const first = env.last;
  assert.equal(env.pendingTimers().length, 1);
  assert.equal(env.fireTimer(), 3000); // the connect timeout: no answer from the proxy
  assert.deepEqual(errors, ['timeout']);
  assert.ok(first.closedWith !== null, 'the hung socket is closed');
  env.fireTimer(); // the reconnect
  assert.equal(env.sockets.length, 2);
  assert.deepEqual(env.last.protocols, [V2]); // a timeout is not a subprotocol refusal
  env.last.accept(V2);
  assert.equal(env.pendingTimers().length, 0); // opened: no timeout left running
  assert.equal(tz.connected, true);
  // A late event from the abandoned socket changes nothing.
  assert.equal(first.onopen, null);
  tz.close();
});
