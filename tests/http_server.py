"""A small real HTTP server on 127.0.0.1 for the download tests.

It serves bytes from a dict, honours ``Range`` and ``If-Range`` like a real
object store, records every request, and can misbehave on purpose:

- ``server.truncate[path] = n``: announce the full Content-Length but send only
  ``n`` bytes, then close the connection (``server.truncate_times[path]`` limits
  how many requests are cut; default every one);
- ``server.stall[path] = n``: send ``n`` bytes, then say nothing more (until
  the server stops, at most 5 s), like a connection that hangs;
- ``server.status[path] = 404``: answer that status instead of the file;
- ``server.ignore_range = True``: behave like a server without Range support.
"""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """Serve ``files`` (URL path -> bytes) on a free port; use as a context manager."""

    def __init__(self, files=None):
        self.files = dict(files or {})
        self.truncate, self.truncate_times, self.status, self.stall = {}, {}, {}, {}
        self.stopping = threading.Event()
        self.ignore_range = False
        self.requests = []  # (method, path, headers dict)
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def range_requests(self, path):
        """The ``Range`` headers received for `path`, in order."""
        return [h["Range"] for method, p, h in self.requests if p == path and "Range" in h]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that hangs up early (tests do it on purpose) is not worth a traceback."""


def _handler_for(server):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_HEAD(self):
            self._answer(send_body=False)

        def do_GET(self):
            self._answer(send_body=True)

        def _answer(self, send_body):
            path = self.path.split("?")[0]
            server.requests.append((self.command, path, dict(self.headers)))
            if path in server.status:
                return self._error(server.status[path])
            if path not in server.files:
                return self._error(404)
            data = server.files[path]
            etag = '"%s"' % hashlib.sha1(data).hexdigest()
            start, code = 0, 200
            wanted = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if wanted and not server.ignore_range and (if_range is None or if_range == etag):
                start = int(wanted.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                code = 206
            body = data[start:]
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            if not server.ignore_range:
                self.send_header("Accept-Ranges", "bytes")
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            if path in server.truncate and server.truncate_times.get(path, 1) > 0:
                if path in server.truncate_times:
                    server.truncate_times[path] -= 1
                body = body[: server.truncate[path]]
                self.close_connection = True
                self.send_header("Connection", "close")
            self.end_headers()
            if send_body and path in server.stall:
                self.wfile.write(body[: server.stall[path]])
                self.wfile.flush()
                server.stopping.wait(5)
                self.close_connection = True
            elif send_body:
                self.wfile.write(body)
                self.wfile.flush()

        def _error(self, code):
            body = f"error {code}".encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
