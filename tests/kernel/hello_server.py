"""A pod's server for the kernel tests: ``Hello, world!`` on every GET.

Run inside a pod network namespace (``ip netns exec pod1 python hello_server.py pod1
12345``); the ``X-Pod`` header says which pod answered, so tests can see round robin.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"Hello, world!"


def main(pod: str, port: int) -> None:
    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(BODY)))
            self.send_header("X-Pod", pod)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, format: str, *args: object) -> None:
            pass

    ThreadingHTTPServer(("0.0.0.0", port), Hello).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
