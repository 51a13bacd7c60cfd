"""Serving the console from ``sessionkeeper admin``: the standard library's WSGI server, one
thread per request, its request lines on the ``sessionkeeper.admin.http`` logger."""

from __future__ import annotations

import logging
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .app import AdminConsole


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logging.getLogger("sessionkeeper.admin.http").info(format, *args)


def serve(app: AdminConsole, host: str, port: int) -> None:
    """Serve until interrupted; then stop the sampler and close the store."""
    logging.getLogger("sessionkeeper.admin").setLevel(logging.INFO)
    with make_server(host, port, app, server_class=_Server, handler_class=_Handler) as httpd:
        print(f"sessionkeeper console on http://{host}:{httpd.server_port}/", flush=True)
        try:
            httpd.serve_forever()
        finally:
            app.close()
            app.store.close()
