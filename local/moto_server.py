"""The local AWS endpoint: moto's server app, with DynamoDB's one guarantee that moto lacks.

DynamoDB applies each conditional write atomically. moto's backend checks the condition and then writes with
no lock, so two requests served by two threads can both pass one condition: two workers would both claim an
idempotency key. DynamoDB requests are therefore served one at a time; the rest (SQS long polls, secrets)
stay concurrent.
"""

from __future__ import annotations

import logging
import threading


class LocalAwsServer:
    def __init__(self, port: int = 0) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)   # moto's per-request access lines
        app = DomainDispatcherApplication(create_backend_app)
        dynamodb = threading.Lock()

        def serve(environ, start_response):
            if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
                with dynamodb:
                    return list(app(environ, start_response))
            return app(environ, start_response)

        self._server = make_server("127.0.0.1", port, serve, threaded=True, request_handler=MotoRequestHandler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalAwsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
