// The example page: talks to this app's websocket rules through tz.js.
(function () {
  'use strict';

  const LOG_LIMIT = 20;
  const status = document.getElementById('status');
  const clock = document.getElementById('clock');
  const form = document.getElementById('echo-form');
  const input = document.getElementById('echo-text');
  const log = document.getElementById('log');

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

  // No URL: tz.js connects to ws(s)://<this page's host>/ws and reconnects by itself.
  const tz = new TZ();

  tz.on('open', () => {
    status.textContent = 'connected';
    status.dataset.state = 'open';
    // The server cancels a client's rules when it disconnects: start the clock on every (re)connect.
    tz.send('clock', []);
  });
  tz.on('close', () => {
    status.textContent = 'reconnecting…';
    status.dataset.state = 'closed';
  });
  // Text form: the server pushes "clock|HH:MM:SS".
  tz.on('clock', (time) => {
    clock.textContent = time;
  });
  tz.on('error', (error) => show('error: ' + error.message, 'error'));

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
})();
