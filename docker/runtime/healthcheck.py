#!/usr/bin/env python3
"""Container health check: GET /healthz (or PATH) of the role running as PID 1.

Usage: tranzit-healthcheck [http|ws] [PATH]. Without a role it is read from
PID 1's command line (the ws role runs `tranzit serve ws`); PATH defaults to
/healthz (liveness); /readyz also needs the broadcast backend. Needs no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def role_of_pid1() -> str:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "http"
    return "ws" if b"serve" in argv and b"ws" in argv else "http"


def main() -> int:
    role = sys.argv[1] if len(sys.argv) > 1 else role_of_pid1()
    if role == "ws":
        port = os.environ.get("TRANZIT_WS_PORT", "19719")
    else:
        port = os.environ.get("TRANZIT_HTTP_PORT", "3000")
    path = sys.argv[2] if len(sys.argv) > 2 else "/healthz"
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            ok = response.status == 200
    except OSError as exc:
        print(f"tranzit-healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
