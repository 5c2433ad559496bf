#!/usr/bin/env python3
"""A store that refuses stale fencing tokens.

POST /write {"key", "token", "writer", "value"}: accepted (200) unless a
higher token was already accepted for that key (409, naming both). GET
/writes lists the accepted writes in order. Listens on HOST:PORT (default
127.0.0.1:8080).
"""
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
highest = {}  # key -> the highest token accepted
accepted = []  # the writes, in order


class Handler(BaseHTTPRequestHandler):
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        if self.path != "/write":
            return self.reply(404, {"error": "POST /write"})
        w = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with lock:
            top = highest.get(w["key"], 0)
            if w["token"] < top:
                return self.reply(
                    409, {"error": f"stale token {w['token']}: token {top} was accepted"}
                )
            highest[w["key"]] = w["token"]
            accepted.append(w)
        self.reply(200, {"accepted": True})

    def do_GET(self):
        with lock:
            self.reply(200, list(accepted))

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    ThreadingHTTPServer((host, port), Handler).serve_forever()
