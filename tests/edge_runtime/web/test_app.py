"""The operator page's server against a running service on 127.0.0.1: the token beyond loopback, the line
running on when the page cannot start, and snapshots rendered only while a page is open."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge_runtime.config import Deployment
from edge_runtime.service import Service
from edge_runtime.web.app import UiError, UiServer, load_token, needs_token
from tests.helpers import free_port, until


@contextlib.asynccontextmanager
async def running(tmp_path: Path, ui_listen: str | None) -> AsyncIterator[Service]:
    deployment = Deployment.model_validate(
        {"service": {"metrics_listen": None, "ui_listen": ui_listen, "outbox": {"path": str(tmp_path / "o.sqlite")}}}
    )
    service = Service(deployment, base_dir=tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop, drain_s=0.5))
    await asyncio.wait_for(service.started.wait(), 30)
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.mark.parametrize(
    ("host", "needed"),
    [("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("localhost", False), ("0.0.0.0", True),
     ("192.168.1.20", True), ("::", True), ("gateway.plant.local", True)],
)  # fmt: skip
def test_a_token_is_needed_beyond_loopback(host: str, needed: bool) -> None:
    assert needs_token(host) is needed


def test_beyond_loopback_without_a_credential_the_page_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = Service(Deployment.model_validate({"service": {"outbox": {"path": str(tmp_path / "o.sqlite")}}}))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(UiError, match="UI_TOKEN"):
        UiServer("0.0.0.0:8080", service)
    (tmp_path / "UI_TOKEN").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_token() == "s3cret"
    assert UiServer("0.0.0.0:8080", service).token == "s3cret"  # constructed, never bound: tests stay on loopback
    v6 = UiServer("[::1]:8080", service)  # IPv6 loopback: no token, bound as ::1, shown with brackets
    assert (v6.host, v6.token, v6.url) == ("::1", None, "http://[::1]:8080/")


async def test_without_the_token_401_with_it_200(tmp_path: Path) -> None:
    async with running(tmp_path, None) as service:
        ui = UiServer(f"127.0.0.1:{free_port()}", service, token="s3cret")  # as a page bound beyond loopback
        await ui.start()
        try:
            async with aiohttp.ClientSession() as http:
                for path in ("", "snapshot.json", "metrics"):
                    async with http.get(ui.url + path) as r:
                        assert r.status == 401, path
                    async with http.get(ui.url + path, headers={"Authorization": "Bearer wrong"}) as r:
                        assert r.status == 401, path
                    async with http.get(ui.url + path, headers={"Authorization": "Bearer s3cret"}) as r:
                        assert r.status == 200, path
                    async with http.get(ui.url + path, params={"token": "s3cret"}) as r:
                        assert r.status == 200, path
                        if path == "metrics":  # the same exposition as the metrics port, formatted off the loop
                            assert r.content_type == "text/plain" and r.charset == "utf-8"
                            assert "edge_runtime_build_info{" in await r.text()
                async with http.get(ui.url + "static/app.js") as r:  # the package's script holds no data
                    assert r.status == 200
                    assert "EventSource" in await r.text()
        finally:
            await ui.stop()


async def test_a_page_that_cannot_bind_leaves_the_line_running(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        async with running(tmp_path, f"127.0.0.1:{taken.getsockname()[1]}") as service:
            assert service.ui is None
            assert service.stats["ui_failures"] == 1
            assert service.sample_observers == [] and service.result_observers == []


async def test_snapshots_are_rendered_only_while_a_page_is_open(tmp_path: Path) -> None:
    async with running(tmp_path, f"127.0.0.1:{free_port()}") as service:
        ui = service.ui
        assert ui is not None
        assert ui._publisher is None and ui.snapshots == 0  # no page yet: nothing renders, no frame is encoded
        got: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as http, http.get(ui.url + "events") as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            async for line in r.content:
                if line.startswith(b"data: "):
                    got.append(json.loads(line[6:]))
                if len(got) == 3:
                    break
        assert all(s["service"] == "edge-runtime" for s in got)
        assert [s["t_ns"] for s in got] == sorted({s["t_ns"] for s in got})  # three distinct, in order
        await until(lambda: ui.watchers == 0, what="the closed page to be noticed")
        await until(lambda: ui._publisher is not None and ui._publisher.done(), what="the publisher to stop")
