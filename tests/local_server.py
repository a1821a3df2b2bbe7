"""A real HTTP server on a free local port, for tests of the OpenAI-compatible clients."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JSONHandler(BaseHTTPRequestHandler):
    """A quiet handler with ``send(code, payload)`` for JSON bodies."""

    def log_message(self, *args):
        pass

    def send(self, code, payload):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def serve(handler):
    """Start ``handler`` (a ``JSONHandler`` subclass) in a background thread: ``(server, base_url)``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"
