"""An HTTP proxy in front of the moto server that makes SQS SendMessageBatch partly fail.

SQS can answer 200 to SendMessageBatch and still list entries in ``Failed``. moto never does, so this
proxy forwards the request without the last entry and reports that entry as failed, for the next
``times`` calls. Functions reach it through ``AWS_ENDPOINT_URL_SQS``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class SqsFaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.fail_batches = 0          # SendMessageBatch calls still to fail one entry of
        self.failed_entries = 0        # how many entries the proxy refused so far
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> SqsFaultProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take(self) -> bool:
        with self._lock:
            if self.fail_batches > 0:
                self.fail_batches -= 1
                self.failed_entries += 1
                return True
            return False

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                refused = None
                if self.headers.get("x-amz-target", "").endswith(".SendMessageBatch") and proxy._take():
                    request = json.loads(body)
                    refused = request["Entries"].pop()
                    body = json.dumps(request).encode()
                answer = requests.post(proxy.upstream + self.path, data=body, headers=headers, timeout=30)
                content = answer.content
                if refused is not None:
                    data = json.loads(content)
                    data.setdefault("Failed", []).append({"Id": refused["Id"], "SenderFault": False,
                                                          "Code": "InternalError",
                                                          "Message": "injected by the test proxy"})
                    content = json.dumps(data).encode()
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding",
                                           "server", "date"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        return Handler
