"""The ASGI contender: a Starlette app with one page that changes its session (see ``__init__``).

    BENCH_SESSION=sessionkeeper BENCH_STORE=redis://127.0.0.1:6379 \\
        uvicorn --workers 4 --port 8000 bench.apps.asgi_app:app
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from . import SECRET, setting, store_options

KIND = setting("SESSION", "none")


async def hit(request: Request) -> PlainTextResponse:
    if KIND == "starsessions":
        from starsessions import load_session

        await load_session(request)
    if KIND != "none":
        request.session["hits"] = request.session.get("hits", 0) + 1
    return PlainTextResponse("ok")


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _middleware() -> list[Middleware]:
    store, prefix = setting("STORE"), setting("PREFIX")
    if KIND == "none":
        return []
    if KIND == "builtin":
        from starlette.middleware.sessions import SessionMiddleware

        return [Middleware(SessionMiddleware, secret_key=SECRET, session_cookie="sid")]
    if KIND == "starsessions":
        from starsessions import SessionMiddleware as StarSessionMiddleware
        from starsessions.stores.redis import RedisStore

        return [
            Middleware(
                StarSessionMiddleware,
                store=RedisStore(store, prefix=prefix or "starsessions."),
                cookie_name="sid",
                cookie_https_only=False,
                lifetime=1800,
            )
        ]
    if KIND == "sessionkeeper":
        import sessionkeeper as sk
        from sessionkeeper.asgi import SessionMiddleware as KeeperMiddleware

        manager = sk.SessionManager(
            store,
            write=setting("WRITE", "end-of-request"),
            store_options=store_options(store, prefix),
        )
        return [Middleware(KeeperMiddleware, manager=manager, app_name="bench")]
    raise SystemExit(f"BENCH_SESSION={KIND!r}: not an ASGI contender")


app = Starlette(
    routes=[Route("/", hit), Route("/healthz", healthz)],
    middleware=_middleware(),
)
