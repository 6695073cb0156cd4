"""A TCP proxy on loopback in front of a real server, to play an outage of that server.

`cut()` closes every proxied connection and refuses new ones (the listening socket is closed),
as a stopped Postgres would; `restore()` listens again on the same port; `reply_delay_s` holds
back each answer of the server, as a slow one would. The server behind it is never touched:
other tests share it.
"""
from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlparse, urlunparse

from tests.live_server import free_port

_CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.reply_delay_s = 0.0

    @classmethod
    def in_front_of(cls, url: str) -> "TcpProxy":
        parts = urlparse(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)

    def url_for(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlparse(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunparse(parts._replace(netloc=netloc))

    def start(self) -> "TcpProxy":
        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: restore rebinds at once
        threading.Thread(target=self._accept, args=(self._listener,), name="tcp-proxy-accept", daemon=True).start()
        return self

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        if self._listener is None:
            self.start()

    def close(self) -> None:
        self.cut()

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut: the listener was closed
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut while this connection was being made
                    _close(client)
                    _close(server)
                    return
                self._sockets.update((client, server))
            for source, sink, answers in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(source, sink, answers), name="tcp-proxy-pump",
                                 daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        try:
            while data := source.recv(_CHUNK):
                if answers and self.reply_delay_s:
                    time.sleep(self.reply_delay_s)
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with self._lock:
                self._sockets.discard(sock)
            _close(sock)


def _close(sock: socket.socket) -> None:
    """shutdown() first: it wakes a thread blocked in recv() or accept() on the socket; close() alone may not."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
