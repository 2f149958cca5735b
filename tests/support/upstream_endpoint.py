"""An upstream endpoint as its own process, for tests/upstream_kill.rs: HTTP/1.1 with keep-alive,
one thread per connection, so that the test can SIGKILL it mid-load like a crashed instance.

Every request is appended to the record file *before* it is answered (`GET <path>` or
`POST <body>`), so a POST that reached this process is on record even when its answer was lost:
the test proves from these files that no POST was received twice. Standard library only.

A GET with `?delay_ms=N` is recorded at once and answered N ms later.

usage: upstream_endpoint.py PORT RECORD_FILE   (PORT 0: any; the port is printed once bound)
"""

import os
import sys
import time
from urllib.parse import parse_qs, urlsplit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def record(self, line):
        # O_APPEND writes of one short line are atomic: threads never interleave their lines.
        os.write(RECORD, (line + "\n").encode())

    def answer(self, body):
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-instance", str(PORT))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/healthz":
            self.record("GET " + self.path)
        # ?delay_ms=N: answer late, so that a kill finds GETs in flight.
        delay = parse_qs(urlsplit(self.path).query).get("delay_ms", ["0"])[0]
        time.sleep(int(delay) / 1000)
        self.answer(b"ok")

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length).decode()
        self.record("POST " + body)
        self.answer(b"created " + body.encode())

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    RECORD = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    PORT = server.server_address[1]
    print(PORT, flush=True)
    server.serve_forever()
