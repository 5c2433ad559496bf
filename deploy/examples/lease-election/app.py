#!/usr/bin/env python3
"""Leader election among an app's replicas through the raftcron sidecar.

Every replica runs this next to its sidecar. One at a time holds the lease
`KEY` and is the leader: it writes to the store, passing the lease's fencing
token with every write. The store (store.py) refuses a token lower than one
it has accepted, so a leader that was paused (GC, SIGSTOP, a slow disk) past
its lease and wakes up still believing it leads cannot overwrite the work of
its successor. The others wait for a change with a long poll, not a loop.

Environment: SIDECAR (default http://127.0.0.1:7090), STORE (default
http://127.0.0.1:8080), POD (default: the host name), KEY (default leader),
TTL seconds (default 10, 1..3600).
"""
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

SIDECAR = os.environ.get("SIDECAR", "http://127.0.0.1:7090")
STORE = os.environ.get("STORE", "http://127.0.0.1:8080")
POD = os.environ.get("POD") or os.uname().nodename
KEY = os.environ.get("KEY", "leader")
TTL = int(os.environ.get("TTL", "10"))


def call(method, url, body=None, timeout=40.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def log(*args):
    print(POD, *args, flush=True)


def stop(*_):
    # Leaving for good: hand the lease over now rather than at its expiry.
    # (The sidecar also releases every lease of the pod when it is stopped.)
    try:
        call("DELETE", f"{SIDECAR}/v1/leases/{KEY}", timeout=2)
    except OSError:
        pass
    sys.exit(0)


def lead(token, renew_at):
    """Leader work until it is time to renew: writes carrying the token."""
    n = 0
    while time.monotonic() < renew_at:
        n += 1
        write = {"key": KEY, "token": token, "writer": POD, "value": n}
        try:
            code, reply = call("POST", f"{STORE}/write", write, timeout=2)
        except OSError as e:
            log("store unreachable:", e)
            code, reply = 0, None
        if code == 409:
            # A newer leader exists: stop at once, whatever we believed.
            log("fenced off by the store:", reply["error"])
            return
        time.sleep(0.5)


def main():
    signal.signal(signal.SIGTERM, stop)
    token = 0
    while True:
        sent = time.monotonic()
        try:
            code, lease = call(
                "POST", f"{SIDECAR}/v1/leases/{KEY}", {"ttlSeconds": TTL}, timeout=TTL
            )
        except OSError as e:
            log("sidecar unreachable:", e)
            time.sleep(1)
            continue
        if code == 200:
            if lease["token"] != token:
                log("leading with token", lease["token"])
            token = lease["token"]
            # The lease holds until sent + TTL on our own clock (the leader
            # granted it after we sent the request); renew at a third of it.
            lead(token, sent + TTL / 3)
        elif code == 409:
            if lease["token"] != token:
                log("following", lease["holder"], "token", lease["token"])
            token = lease["token"]
            # Returns as soon as the token changes (released, expired, taken).
            try:
                call("GET", f"{SIDECAR}/v1/leases/{KEY}?wait=30s&token={token}")
            except OSError:
                time.sleep(1)
        else:
            log("lease call failed:", code, lease)
            time.sleep(1)


if __name__ == "__main__":
    main()
