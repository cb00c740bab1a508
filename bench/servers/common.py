"""What every peer shares: the hello body, the middleware's header."""

from __future__ import annotations

HELLO = "Hello, World!"
#: Header added by the "user middleware" of the JSON echo workload.
MIDDLEWARE_HEADER = ("X-Bench-Middleware", "1")
