"""The 2018 tranzit API, on top of the core (which never imports this package).

* :mod:`~tranzit.compat.handlers`: rules in the ``send_func``/``writer`` convention;
* :mod:`~tranzit.compat.wsserver`: ``WebSocketServer(host, port, api)``;
* :mod:`~tranzit.compat.web`: ``tranzit.web``, aiohttp's ``web`` plus ``MainServer``.

Projects written for it run unchanged (``../shared/CONTRACT.md``).
"""
