#!/usr/bin/env python3
"""An OTLP/HTTP collector stand-in for bench/run-tracing.sh: it reads each export and answers
200 (`ok`), or holds every export without answering (`stall`), as a collector that hangs would.

Usage: sink.py PORT ok|stall
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = sys.argv[2]


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if MODE == "stall":
            time.sleep(3600)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
