"""The operator page's server: static page, live snapshots by server-sent events, on `service.ui_listen`.

aiohttp serves it on the service's own event loop (no second thread, no hand-written HTTP). Read-only: every
route is GET. Bound beyond loopback, every request needs the token of `$CREDENTIALS_DIRECTORY/UI_TOKEN`
(systemd `LoadCredential=UI_TOKEN:...`), as `Authorization: Bearer TOKEN` or `?token=TOKEN`; without it 401.
Only `/static/` (the package's own script and style sheet, no data) is served without it.

The publisher runs only while at least one page is open: it gathers a snapshot on the loop every
`interval_s`, renders it (quantiles, spectra, JPEGs) in its own thread, and each open page is sent the newest
one; a slow browser skips snapshots instead of queueing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from adapters.base import EdgeRuntimeError, dumps
from edge_runtime.web.snapshot import LiveView

if TYPE_CHECKING:
    from edge_runtime.service import Service

__all__ = ["UiError", "UiServer", "load_token", "needs_token"]

log = logging.getLogger("edge_runtime.web")

STATIC = Path(__file__).resolve().parent / "static"
INTERVAL_S = 0.33  # a few snapshots per second
BACKLOG_EVERY_S = 1.0  # the per-sink outbox query runs at most this often
TOKEN_NAME = "UI_TOKEN"


class UiError(EdgeRuntimeError):
    """The operator page cannot be served as configured (e.g. bound beyond loopback without a token)."""


def needs_token(host: str) -> bool:
    """Anything but a loopback address (a name, a wildcard, a LAN address) needs the token."""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return True


def load_token(environ: dict[str, str] | None = None) -> str | None:
    """The token from systemd's credentials directory, or None when there is none."""
    env = os.environ if environ is None else environ
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / TOKEN_NAME
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


class UiServer:
    """Serves the page for one service; `start` registers the view's observer hooks on it."""

    def __init__(
        self, listen: str, service: Service, *, token: str | None = None, interval_s: float = INTERVAL_S
    ) -> None:
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"  # [::1]:8080 binds ::1
        self.port = int(port)
        self.service = service
        self.interval_s = interval_s
        if token is None and needs_token(self.host):
            token = load_token()
            if token is None:
                raise UiError(
                    f"service.ui_listen {listen} is beyond loopback: the page needs a token in "
                    f"$CREDENTIALS_DIRECTORY/{TOKEN_NAME} (systemd LoadCredential={TOKEN_NAME}:/path/to/file)"
                )
        self.token = token
        self.view = LiveView(service)
        self.watchers = 0
        self.snapshots = 0  # rendered so far (the benchmark and tests read it)
        self._latest: bytes = b""
        self._version = 0
        self._changed = asyncio.Condition()
        self._publisher: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ui")
        self._runner: web.AppRunner | None = None
        self._backlog: dict[str, tuple[int, int | None]] = {}
        self._backlog_at = -1e9

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self._index)
        app.router.add_get("/events", self._events)
        app.router.add_get("/snapshot.json", self._snapshot)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_static("/static/", STATIC)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.service.sample_observers.append(self.view.on_samples)
        self.service.result_observers.append(self.view.on_result)
        log.info("event=ui_started url=%s token=%s", self.url, "required" if self.token else "not_required")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.service.sample_observers.remove(self.view.on_samples)
        with contextlib.suppress(ValueError):
            self.service.result_observers.remove(self.view.on_result)
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        if self._runner is not None:
            await self._runner.cleanup()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- requests -------------------------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token is not None and not request.path.startswith("/static/"):  # the package's own assets
            given = request.query.get("token", "")
            header = request.headers.get("Authorization", "")
            if header.startswith("Bearer "):
                given = header[len("Bearer ") :]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return web.Response(
                    status=401, text="token required (Authorization: Bearer or ?token=)\n",
                    headers={"WWW-Authenticate": "Bearer"},
                )  # fmt: skip
        response: web.StreamResponse = await handler(request)
        return response

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def _metrics(self, request: web.Request) -> web.Response:
        from edge_runtime.metrics import render_off_loop

        body = await render_off_loop(self.service)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _snapshot(self, request: web.Request) -> web.Response:
        data = await self._render()
        return web.Response(body=data, content_type="application/json")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        self.watchers += 1
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish(), name="ui:publisher")
        seen = 0
        try:
            while True:
                async with self._changed:
                    await self._changed.wait_for(partial(self._newer_than, seen))
                seen = self._version
                await response.write(b"data: " + self._latest + b"\n\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.watchers -= 1
        return response

    def _newer_than(self, version: int) -> bool:
        return self._version != version

    # ---- publishing -----------------------------------------------------------------------------------------
    async def _render(self) -> bytes:
        loop = asyncio.get_running_loop()
        if loop.time() - self._backlog_at >= BACKLOG_EVERY_S:
            self._backlog_at = loop.time()
            with contextlib.suppress(Exception):  # an outbox not open yet (or closing) shows no backlog
                self._backlog = await self.service.outbox.backlog()
        gathered = self.view.gather(self._backlog)
        data = await loop.run_in_executor(self._executor, self._encode, gathered)
        self.snapshots += 1
        return data

    def _encode(self, gathered: dict[str, Any]) -> bytes:
        """Render and serialise off the event loop (the ui thread)."""
        return dumps(self.view.render(gathered)).encode()

    async def _publish(self) -> None:
        """Render while anyone watches; stop when the last page closes (frames are then never encoded)."""
        loop = asyncio.get_running_loop()
        while self.watchers > 0:
            started = loop.time()
            try:
                data = await self._render()
            except Exception as exc:  # a display bug must not stop the page's other panels, nor the line
                log.warning("event=ui_snapshot_failed error=%r", exc)
                data = json.dumps({"error": repr(exc)}).encode()
            async with self._changed:
                self._latest = data
                self._version += 1
                self._changed.notify_all()
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))
