// The example page, once logged in: talks to this app's websocket rules through tz.js.
// The websocket carries the session cookie; the server takes the chat name from it.
(function () {
  'use strict';

  const LOG_LIMIT = 20;
  const ROOM = 'lobby';
  const status = document.getElementById('status');
  const clock = document.getElementById('clock');
  const form = document.getElementById('echo-form');
  const input = document.getElementById('echo-text');
  const log = document.getElementById('log');
  const chatForm = document.getElementById('chat-form');
  const chatText = document.getElementById('chat-text');
  const chatLog = document.getElementById('chat-log');
  const chatServer = document.getElementById('chat-server');

  function show(text, kind) {
    const item = document.createElement('li');
    item.textContent = text;
    if (kind) {
      item.className = kind;
    }
    log.prepend(item);
    while (log.children.length > LOG_LIMIT) {
      log.lastElementChild.remove();
    }
  }

  function showChat(name, text, kind) {
    const item = document.createElement('li');
    const who = document.createElement('b');
    who.textContent = name === '*' ? '' : name + ': ';
    item.append(who, text);
    if (name === '*') {
      item.className = 'notice';
    } else if (kind) {
      item.className = kind;
    }
    chatLog.append(item);
    while (chatLog.children.length > LOG_LIMIT) {
      chatLog.firstElementChild.remove();
    }
  }

  // No URL: tz.js connects to ws(s)://<this page's host>/ws and reconnects by itself.
  const tz = new TZ();
  // Set on each (re)connect: the room's history, if the server sends one, replaces the log.
  let replaceLog = false;

  tz.on('open', () => {
    status.textContent = 'connected';
    status.dataset.state = 'open';
    // The server cancels a client's rules and forgets its rooms when it disconnects:
    // start the clock and join the room again on every (re)connect.
    tz.send('clock', []);
    replaceLog = true;
    tz.call('join', ROOM).then(
      (reply) => {
        // "<room>,<connection id>,<server host name>"
        chatServer.textContent = 'via ' + reply.split(',')[2];
      },
      (error) => showChat('*', 'error: ' + error.message),
    );
  });
  tz.on('close', () => {
    // A refused upgrade (the session ended: logged out in another tab) also lands here.
    status.textContent = 'reconnecting…';
    status.dataset.state = 'closed';
  });
  // Text form: the server pushes "clock|HH:MM:SS".
  tz.on('clock', (time) => {
    clock.textContent = time;
  });
  tz.on('error', (error) => {
    if (error.code !== 'socket') {
      show('error: ' + error.message, 'error');
    }
  });
  // Pushed to every member of the room: "chat|<room>,<name>,<text>" ("*": a notice).
  tz.on('chat', (room, name, ...text) => showChat(name, text.join(',')));
  tz.on('chat_warning', (text) => showChat('*', text));
  // A server that keeps the chat (database=postgres) sends the room's latest messages
  // before the join notice, oldest first: "history|<room>,<name>,<text>". After a
  // reconnect they take the place of what the log showed, missed messages included.
  tz.on('history', (room, name, ...text) => {
    if (replaceLog) {
      chatLog.replaceChildren();
      replaceLog = false;
    }
    showChat(name, text.join(','), 'history');
  });

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = input.value;
    input.value = '';
    // JSON form: resolves with what the echo rule returns (commas are fine here).
    tz.call('echo', text).then(
      (reply) => show('echo: ' + reply),
      (error) => show('error: ' + error.message, 'error'),
    );
  });

  chatForm.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!tz.connected) {
      // Not queued: it would reach the server before the room is joined again.
      showChat('*', 'not connected; the message is kept, send it again when connected');
      return;
    }
    const text = chatText.value;
    chatText.value = '';
    tz.call('say', ROOM, text).catch((error) => showChat('*', 'error: ' + error.message));
  });
})();
