"""WSGI middleware: ``environ["sessionkeeper.session"]`` for any WSGI app.

Ordering: the session is written (when the policy says so) after the application has chosen a
status and before the first byte of the body goes to the server, so under ``EndOfRequest`` every
response the client sees is already in the store. The status and headers are handed to the server
then, once the request has ended (so a session the app emptied gets its cookie deleted), or at the
app's first ``write()``. A changed request whose write cannot be made
durable (``WriteRefused``) answers ``503`` with ``Retry-After`` instead: ``start_response`` is
called again with the error (PEP 3333 allows it before the first body byte), the application's
body is closed unsent. A status of 500 or more, or an exception, rolls
the request's changes back and writes nothing. A request whose session is not cached while the
store is down gets ``503`` with ``Retry-After``, never a silently empty session; so does a request
whose ``rotate_id()``, ``invalidate()`` or ``sync()`` meets an outage (one of ``UNAVAILABLE_ERRORS``)
before the app has returned its body (a lazy app: before its first chunk).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import UNAVAILABLE_ERRORS, WriteRefused
from .lifecycle import UNAVAILABLE_BODY, ActiveRequest
from .manager import SessionManager
from .tracking import Mode, encode_url, split_path_param

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

ENVIRON_KEY = "sessionkeeper.session"


class SessionMiddleware:
    """Wrap ``app``; sessions of ``app_name`` are kept by ``manager``.

    ``owner``, if given, returns the principal of a request (say, from ``REMOTE_USER``): a session
    bound to another principal is then not served to it.
    """

    def __init__(
        self,
        app: WSGIApp,
        manager: SessionManager,
        app_name: str = "default",
        *,
        environ_key: str = ENVIRON_KEY,
        owner: Callable[[Environ], str | None] | None = None,
    ) -> None:
        self.app = app
        self.manager = manager
        self.app_name = app_name
        self.environ_key = environ_key
        self.owner = owner
        # The manager's settings are frozen: where the id travels is worked out once.
        tracking = manager.tracking
        self._tracking = tracking
        self._uses_url = tracking.uses_url
        self._header_key = tracking.header_key_wsgi if Mode.HEADER in tracking.modes else None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        tracking = self._tracking
        path_id = None
        if self._uses_url:
            path, path_id = split_path_param(environ.get("PATH_INFO", ""), tracking.url_param)
            environ["PATH_INFO"] = path
        header_key = self._header_key
        session_id = tracking.read(
            cookie_header=environ.get("HTTP_COOKIE"),
            path_param=path_id,
            header_value=environ.get(header_key) if header_key is not None else None,
        )
        try:
            active = self.manager.lifecycle.begin_request(
                self.app_name, session_id, owner=self.owner(environ) if self.owner else None
            )
        except UNAVAILABLE_ERRORS:
            start_response("503 Service Unavailable", self.manager.lifecycle.refuse())
            return [UNAVAILABLE_BODY]
        session = active.session
        environ[self.environ_key] = session
        environ["sessionkeeper.encode_url"] = lambda url: encode_url(
            url, session.id, tracking.url_param
        )
        https = environ.get("wsgi.url_scheme") == "https"
        status: list[int] = []
        chosen: list[tuple[str, list[tuple[str, str]], Any]] = []
        sent: list[Callable[[bytes], Any]] = []  # the server's write(), once it has the headers

        def send_headers() -> Callable[[bytes], Any]:
            """Hand the app's status and headers on, with the session's: decided once the
            request has ended (an emptied session's cookie deletion is known only then), or at
            the app's first ``write()``."""
            if not sent:
                status_line, headers, exc_info = chosen[-1]
                if status[0] < 500:  # else the changes are rolled back: the id is not sent
                    headers = headers + self.manager.lifecycle.response_headers(active, https=https)
                sent.append(start_response(status_line, headers, exc_info))
            return sent[0]

        def session_start_response(
            status_line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if exc_info is not None and sent:  # PEP 3333: too late to change the status
                raise exc_info[1].with_traceback(exc_info[2])
            status[:] = [int(status_line[:3])]
            chosen[:] = [(status_line, headers, exc_info)]
            return lambda data: send_headers()(data)

        def refuse() -> list[bytes]:
            # exc_info: a server that already sent headers raises instead of sending a second
            # status (PEP 3333); none has here, as the body was not handed on yet.
            self.manager.lifecycle.end_request(active, ok=False)
            start_response(
                "503 Service Unavailable", self.manager.lifecycle.refuse(), sys.exc_info()
            )
            return [UNAVAILABLE_BODY]

        try:
            body = self.app(environ, session_start_response)
        except UNAVAILABLE_ERRORS:  # rotate_id(), invalidate(), sync() in the app: the store's down
            return refuse()
        except BaseException:
            self.manager.lifecycle.end_request(active, ok=False)
            raise
        return _Body(body, self.manager, active, status, refuse, send_headers)


class _Body:
    """The response body, finishing the session's request before the first chunk is handed on."""

    def __init__(
        self,
        body: Iterable[bytes],
        manager: SessionManager,
        active: ActiveRequest,
        status: list[int],
        refuse: Callable[[], list[bytes]],
        send_headers: Callable[[], object],
    ) -> None:
        self._body = body
        self._manager = manager
        self._active = active
        self._status = status
        self._refuse = refuse  # the 503 of a lazy app whose first chunk met a store outage
        self._send_headers = send_headers

    def _finish(self) -> bool:
        """End the request; ``False`` when its write was refused and a 503 replaced the
        response."""
        ok = bool(self._status) and self._status[0] < 500
        try:
            self._manager.lifecycle.end_request(self._active, ok=ok)
        except WriteRefused:
            self._refuse()  # the request was rolled back and ended; this sends the 503
            return False
        return True

    def _close_body(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()

    def __iter__(self) -> Iterator[bytes]:
        it = iter(self._body)
        chunks: list[bytes] = []
        if not self._status:  # a lazy app calls start_response when first iterated
            try:
                chunks.append(next(it))
            except StopIteration:
                pass
            except UNAVAILABLE_ERRORS:  # the server still calls close(), which closes the body
                yield from self._refuse()
                return
            except BaseException:
                self._manager.lifecycle.end_request(self._active, ok=False)
                raise
        if not self._finish():
            self._close_body()
            self._body = ()  # closed: close() must not close it twice
            yield UNAVAILABLE_BODY
            return
        if self._status:
            self._send_headers()
        yield from chunks
        yield from it

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)  # _close_body, inline: every request
            if close is not None:
                close()
        finally:
            if not self._active.ended:  # finished when the body was iterated
                self._finish()
