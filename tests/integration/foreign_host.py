"""A "foreign host" for the token tests: a TCP server on 127.0.0.1 that records every connection it gets.

It records at the connection level, not the HTTP level, so a TLS attempt (an https URL that slipped
through to it) counts as much as a plain HTTP request carrying X-API-TOKEN. It answers whatever looks
like HTTP with 200 and a JSON body that would satisfy any Qualtrics call, so a client that leaked the
token would not even see an error.
"""

from __future__ import annotations

import socket
import socketserver
import threading

ANSWER = b'{"result": {"id": "CID_FOREIGN", "elements": [], "nextPage": null}, "meta": {"httpStatus": "200 - OK"}}'


class ForeignHost:
    def __init__(self) -> None:
        self.connections: list[bytes] = []   # the first bytes each connection sent
        self._lock = threading.Lock()
        host = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                conn.settimeout(2)
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                with host._lock:
                    host.connections.append(data)
                if data[:1].isalpha():
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                                 b"Content-Length: " + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> ForeignHost:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def clear(self) -> None:
        with self._lock:
            self.connections.clear()

    def received(self) -> list[bytes]:
        with self._lock:
            return list(self.connections)
