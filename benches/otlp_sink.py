#!/usr/bin/env python3
"""A minimal OTLP/HTTP receiver: accepts every POST (e.g. /v1/traces), answers 200 with an empty
protobuf ExportTraceServiceResponse, and drops the data. With -v it prints one line per export
(path, bytes). Usage: otlp_sink.py PORT [-v]"""
import http.server
import sys


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        if VERBOSE:
            print(f"export {self.path} {self.headers.get('content-type')} {n} bytes", flush=True)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


VERBOSE = "-v" in sys.argv[2:]
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
