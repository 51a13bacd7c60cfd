"""``uvicorn --workers N``, but with TCP_NODELAY on every accepted connection.

With more than one worker, uvicorn binds the listening socket itself and hands it to the workers
with ``proto`` left at 0; accepted sockets inherit it, and asyncio turns Nagle's algorithm off
only for sockets that say ``IPPROTO_TCP``. A response written as headers then body then waits for
the client's delayed ACK, about 40 ms on Linux, on every keep-alive request after the first: every
contender would measure ~40 ms. This launcher gives the listening socket its protocol, and is
otherwise uvicorn's own multi-worker path::

    python -m bench.apps.uvicorn_run --workers 4 --port 8000 bench.apps.asgi_app:app
"""

from __future__ import annotations

import argparse
import socket

import uvicorn
from uvicorn.supervisors import Multiprocess


class NoDelayConfig(uvicorn.Config):
    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        return sock


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.apps.uvicorn_run")
    parser.add_argument("app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    config = NoDelayConfig(
        args.app,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_level="warning",
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()


if __name__ == "__main__":
    main()
