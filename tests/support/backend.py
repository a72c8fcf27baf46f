"""A tiny HTTP/1.1 backend for proxy tests: answers every request with its own name, keeps
connections alive, and supports a few behaviours chosen by path:

  /status/<code>   answer with that status
  /slow/<ms>       answer after a delay
  /stream/<ms>     answer the head at once and the body over that long
  /echo            answer with the request body (chunked or not) and headers as JSON
  Upgrade: echo    switch protocols and echo bytes back (a stand-in for WebSocket)

Usage: python3 backend.py NAME  -- listens on $PORT (or a free port) and prints
"listening on PORT" once ready. $FAIL_EVERY=N answers every Nth plain request 500, and
$DELAY_MS=D answers plain requests after D ms: a known load for the golden metrics."""

import http.server
import json
import os
import sys
import threading
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, code, body, content_type="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", NAME)
        self.send_header("X-Pid", str(os.getpid()))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = self.read_chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
        if self.headers.get("Upgrade", "").lower() == "echo":
            self.send_response(101)
            self.send_header("Upgrade", "echo")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            while True:
                data = self.connection.recv(4096)
                if not data:
                    return
                self.connection.sendall(data)
        if self.path.startswith("/stream/"):
            # Head now, body in two chunks some milliseconds apart.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Backend", NAME)
            self.end_headers()
            self.wfile.write(b"1\r\na\r\n")
            self.wfile.flush()
            time.sleep(int(self.path.split("/")[2]) / 1000)
            self.wfile.write(b"1\r\nb\r\n0\r\n\r\n")
            return
        if self.path.startswith("/status/"):
            return self.answer(int(self.path.split("/")[2]), NAME.encode())
        if self.path.startswith("/slow/"):
            time.sleep(int(self.path.split("/")[2]) / 1000)
            return self.answer(200, NAME.encode())
        if self.path.startswith("/echo"):
            payload = {"backend": NAME, "method": self.command, "body": body.decode(errors="replace"),
                       "headers": {k.lower(): v for k, v in self.headers.items()}}
            return self.answer(200, json.dumps(payload).encode(), "application/json")
        with LOCK:
            global SERVED
            SERVED += 1
            served = SERVED
        if DELAY_MS:
            time.sleep(DELAY_MS / 1000)
        if FAIL_EVERY and served % FAIL_EVERY == 0:
            return self.answer(500, NAME.encode())
        return self.answer(200, NAME.encode())

    def read_chunked(self):
        body = b""
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return body
            body += self.rfile.read(size)
            self.rfile.readline()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

    def log_message(self, *args):
        pass


NAME = sys.argv[1]
FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))
DELAY_MS = int(os.environ.get("DELAY_MS", "0"))
SERVED = 0
LOCK = threading.Lock()
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "0"))), Handler)
server.daemon_threads = True
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
