"""Loopback HTTP receivers standing in for outbound destinations."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


class SlackReceiver:
    """A Slack-compatible incoming webhook on 127.0.0.1: records each POST, answers ``status``."""

    def __init__(self, status: int = 200):
        receiver = self
        self.posts: list[dict] = []
        self.status = status

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append({"host": self.headers["Host"], "json": json.loads(body)})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/x"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
