"""The console's HTTP side (aiohttp): pages, a JSON API, live streams (SSE), login.

Safe by default: the config refuses a non-loopback ``listen`` without a token; with a token,
every page and API call needs it (``Authorization: Bearer`` or the session cookie the login
page sets; 401 otherwise). Requests are bounded in size (``client_max_size``, header limits)
and time (a deadline per request; streams have heartbeats, a write deadline and a lifetime),
live streams in number (``console.max_clients``) and in queued events per stream (a slow
browser is dropped, never waited for). The command tester's endpoint answers 403 unless
``console.allow_commands`` is true. Pages are static files of this package; nothing is
fetched from elsewhere (the Content-Security-Policy says so to the browser too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from edge_proxy.ops.console import views
from edge_proxy.ops.console.auth import COOKIE, SESSION_SECONDS
from edge_proxy.ops.console.broadcast import sse_frame
from edge_proxy.ops.console.state import BadCommand, Console

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024  # bytes of a request body
REQUEST_SECONDS = 10.0  # every request but a stream and a command
COMMAND_SECONDS = 70.0  # a tester command: its own timeout (at most 60 s) plus margin
HEARTBEAT = 15.0  # a comment on an idle stream, so proxies and browsers keep it
WRITE_SECONDS = 5.0  # a stream write that takes longer ends the stream
STREAM_SECONDS = 3600.0  # a stream's lifetime; the browser reconnects
LOGIN_FAIL_DELAY = 0.5
MAX_TOPICS = 8

PAGES = {
    "/": "overview.html",
    "/devices": "devices.html",
    "/logs": "logs.html",
    "/config": "config.html",
}
PUBLIC = ("/login", "/static/")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
TOPIC_RE = re.compile(r"^(overview|devices|changes|logs|device:[^\s,]{1,200})$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def static_dir() -> Path:
    """The folder of the console's HTML, CSS and JavaScript (package data)."""
    return Path(str(resources.files("edge_proxy.ops.console") / "static"))


class ConsoleServer:
    """The aiohttp application and its listener."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.static = static_dir()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app = self._build()

    def _build(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST, middlewares=[self._guard])
        r = app.router
        for path, page in PAGES.items():
            r.add_get(path, self._page(page))
        r.add_get("/device/{id}", self._page("device.html"))
        r.add_get("/login", self._page("login.html"))
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_get("/api/overview", self.api_overview)
        r.add_get("/api/devices", self.api_devices)
        r.add_get("/api/devices/{id}", self.api_device)
        r.add_get("/api/logs", self.api_logs)
        r.add_get("/api/config", self.api_config)
        r.add_get("/api/events", self.events)
        r.add_post("/api/command", self.command)
        r.add_static("/static/", self.static, show_index=False, follow_symlinks=False)
        return app

    # ------------------------------------------------------------------ the guard

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Auth, CSRF, per-request deadline and security headers for every request."""
        path = request.path
        if not path.startswith(PUBLIC) and not self._allowed(request):
            response: web.StreamResponse = self._unauthorized(request)
        elif request.method == "POST" and not _same_origin(request):
            response = _json({"error": "cross-origin request refused"}, 403)
        elif path == "/api/events":
            response = await handler(request)
        else:
            seconds = COMMAND_SECONDS if path == "/api/command" else REQUEST_SECONDS
            try:
                response = await asyncio.wait_for(handler(request), seconds)
            except asyncio.TimeoutError:
                response = _json({"error": "the request took too long"}, 503)
        if not response.prepared:
            _secure(response)
        return response

    def _allowed(self, request: web.Request) -> bool:
        return self.console.sessions.allowed(
            request.headers.get("Authorization"), request.cookies.get(COOKIE)
        )

    def _unauthorized(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            response = _json({"error": "unauthorized: a token is needed"}, 401)
            response.headers["WWW-Authenticate"] = 'Bearer realm="edge-proxy console"'
            return response
        page = web.FileResponse(self.static / "login.html", status=401)
        page.headers["Cache-Control"] = "no-store"
        return page

    # ------------------------------------------------------------------ pages and login

    def _page(self, name: str) -> Handler:
        path = self.static / name

        async def page(request: web.Request) -> web.StreamResponse:
            response = web.FileResponse(path)
            response.headers["Cache-Control"] = "no-store"
            return response

        return page

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Trade the token for a session cookie (form post or fetch)."""
        form = await request.post()
        token = form.get("token")
        sid = self.console.sessions.login(token if isinstance(token, str) else None)
        if sid is None:
            log.warning("console: a login with a wrong token from %s", _peer(request))
            await asyncio.sleep(LOGIN_FAIL_DELAY)
            if request.headers.get("Accept", "").startswith("application/json"):
                return _json({"error": "wrong token"}, 401)
            page = web.FileResponse(self.static / "login.html", status=401)
            return page
        target = form.get("next")
        where = target if isinstance(target, str) and _local_path(target) else "/"
        if request.headers.get("Accept", "").startswith("application/json"):
            response: web.StreamResponse = _json({"ok": True, "next": where})
        else:
            response = web.Response(status=303, headers={"Location": where})
        response.set_cookie(
            COOKIE,
            sid,
            httponly=True,
            samesite="Strict",
            path="/",
            max_age=SESSION_SECONDS,
            secure=request.secure,
        )
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """End the session."""
        self.console.sessions.logout(request.cookies.get(COOKIE))
        response = web.Response(status=303, headers={"Location": "/login"})
        response.del_cookie(COOKIE, path="/")
        return response

    # ------------------------------------------------------------------ the API

    async def api_overview(self, request: web.Request) -> web.StreamResponse:
        """The overview page's data."""
        return _json(views.overview(self.console.rt))

    async def api_devices(self, request: web.Request) -> web.StreamResponse:
        """The devices table."""
        return _json(views.device_rows(self.console.rt))

    async def api_device(self, request: web.Request) -> web.StreamResponse:
        """One device: points, history, commands (and the tester's form when allowed)."""
        c = self.console
        detail = views.device_detail(c.rt, request.match_info["id"], c.history, c.commands)
        if detail is None:
            return _json({"error": "no such device"}, 404)
        return _json(detail)

    async def api_logs(self, request: web.Request) -> web.StreamResponse:
        """The kept log lines (WARNING and above), oldest first."""
        return _json({"lines": self.console.logs.since(0)})

    async def api_config(self, request: web.Request) -> web.StreamResponse:
        """The loaded configuration, secrets redacted."""
        return _json(views.config_view(self.console.rt.config))

    async def command(self, request: web.Request) -> web.StreamResponse:
        """The command tester: 403 unless console.allow_commands."""
        if not self.console.config.allow_commands:
            return _json({"error": "the command tester is off (console.allow_commands)"}, 403)
        if request.content_type != "application/json":
            return _json({"error": "send application/json"}, 415)
        try:
            body = await request.json()
        except ValueError:
            return _json({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "the body must be a JSON object"}, 400)
        try:
            answer = await self.console.call(body, _peer(request))
        except BadCommand as exc:
            return _json({"error": str(exc)}, 400)
        return _json(answer)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """A live stream (Server-Sent Events) of the topics asked for."""
        wanted = [t for t in request.query.get("topics", "").split(",") if t]
        if not wanted or len(wanted) > MAX_TOPICS or not all(TOPIC_RE.match(t) for t in wanted):
            return _json({"error": f"topics: up to {MAX_TOPICS} of {TOPIC_RE.pattern}"}, 400)
        client = self.console.streams.join(frozenset(wanted), _peer(request))
        if client is None:
            return _json({"error": "too many live streams are open"}, 503)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        _secure(response)
        loop = asyncio.get_running_loop()
        ends = loop.time() + STREAM_SECONDS
        try:
            await response.prepare(request)
            await asyncio.wait_for(
                response.write(b"retry: 1000\n\n" + sse_frame("hello", '{"ok":true}')),
                WRITE_SECONDS,
            )
            while loop.time() < ends:
                try:
                    frame = await asyncio.wait_for(client.queue.get(), HEARTBEAT)
                except asyncio.TimeoutError:
                    frame = b": keep-alive\n\n"
                if frame is None:
                    break
                await asyncio.wait_for(response.write(frame), WRITE_SECONDS)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            pass  # a stuck or gone browser: its stream ends, nobody else waits
        finally:
            self.console.streams.leave(client)
        return response

    # ------------------------------------------------------------------ listening

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); the bound port."""
        runner = web.AppRunner(
            self.app,
            access_log=None,
            keepalive_timeout=15.0,
            max_line_size=4096,
            max_field_size=4096,
            max_headers=64,
            lingering_time=2.0,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=64)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        shown = f"[{host}]" if ":" in host else host
        log.info("console on http://%s:%d/", shown, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening; open streams end."""
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner.cleanup(), 5.0)


def _json(doc: Any, status: int = 200) -> web.Response:
    response = web.Response(
        text=views.dumps(doc), status=status, content_type="application/json", charset="utf-8"
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _secure(response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")


def _same_origin(request: web.Request) -> bool:
    """A POST's Origin (when the browser sends one) is this server."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.host


def _local_path(target: str) -> bool:
    return target.startswith("/") and not target.startswith("//") and "\\" not in target


def _peer(request: web.Request) -> str:
    return request.remote or "?"
