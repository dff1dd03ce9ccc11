"""hello: the smallest app Rhone can run — standard library only.

It listens on $PORT, answers `/healthz` for the readiness probe, and says which version and deployment it is.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "1.0.0"


class Handler(BaseHTTPRequestHandler):
    server_version = f"hello/{VERSION}"
    protocol_version = "HTTP/1.1"  # keep-alive: the edge reuses its connection instead of opening one per request
    disable_nagle_algorithm = True  # headers and body go out as separate writes; don't wait 40 ms between them

    def _send(self, status: int, body: dict) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        elif self.path in ("/", "/version"):
            self._send(
                200,
                {
                    "app": "hello",
                    "message": "Hello from Rhone!",
                    "version": VERSION,
                    "deployment": os.environ.get("RHONE_DEPLOYMENT_ID"),
                    "allocation": os.environ.get("RHONE_ALLOCATION_ID"),
                    "environment": os.environ.get("RHONE_ENVIRONMENT"),
                },
            )
        else:
            self._send(404, {"error": "not found", "path": self.path})

    def log_message(self, format: str, *args: object) -> None:
        if self.path == "/healthz":
            return  # Rhone Local probes it every second (liveness): not worth a line in `rhone logs`
        print(f"{self.address_string()} {format % args}", flush=True)


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"hello {VERSION} listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
