"""The shared paho connection against real mosquitto brokers: TLS with client certificates, the host name check,
user name and password, and the online/offline status topic with its last will."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.base import AdapterError, Result, Stats
from adapters.mqtt.connection import Inbox
from adapters.mqtt.sink import MqttSink
from adapters.mqtt.source import MqttSource
from tests.helpers import until
from tests.helpers.mosquitto import Mosquitto
from tests.helpers.pki import Pki, make_pki

from .common import REPO, opened, raw_client, sink_config, source_config


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def _tls_broker(pki: Pki, cert: Path, key: Path) -> Mosquitto:
    return Mosquitto(
        listener_options=[
            f"cafile {pki.ca}",
            f"certfile {cert}",
            f"keyfile {key}",
            "require_certificate true",
        ]
    )


@pytest.fixture
def tls_broker(pki: Pki) -> Iterator[Mosquitto]:
    """A broker that speaks only TLS and requires a client certificate signed by the test CA."""
    with _tls_broker(pki, pki.server_cert, pki.server_key) as broker:
        yield broker


def _tls(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {
        "tls_ca_file": pki.ca,
        "tls_cert_file": pki.client_cert,
        "tls_key_file": pki.client_key,
        **extra,
    }


async def test_source_and_sink_over_tls_with_client_certificates(tls_broker: Mosquitto, pki: Pki) -> None:
    """The sink's acknowledged delivery and its status message, received by the source, both over TLS."""
    src_cfg = source_config(tls_broker.port, {"topic": "plant/+/status", "stream": "{levels[1]}.up"}, **_tls(pki))
    sink_cfg = sink_config(tls_broker.port, status_topic="plant/{id}/status", status_online="1", **_tls(pki))
    async with opened(MqttSource(src_cfg)) as source, opened(MqttSink(sink_cfg)) as sink:
        it = aiter(source.stream())
        await sink.deliver(Result(pipeline="line1", stream="s", t_ns=1, decision="ok", seq=5))
        reading = await asyncio.wait_for(anext(it), 20)
    assert sink.stats["delivered"] == 1
    assert (reading.stream, float(reading.value)) == ("out.up", 1.0)


async def test_broker_refuses_a_client_without_a_certificate(tls_broker: Mosquitto, pki: Pki) -> None:
    cfg = sink_config(tls_broker.port, tls_ca_file=pki.ca, connect_timeout_s=2.0)
    with pytest.raises(AdapterError, match="no connection"):
        async with opened(MqttSink(cfg)):
            pass


async def test_broker_refuses_a_certificate_from_another_ca(tls_broker: Mosquitto, pki: Pki) -> None:
    cfg = sink_config(
        tls_broker.port,
        **_tls(pki, tls_cert_file=pki.stranger_cert, tls_key_file=pki.stranger_key, connect_timeout_s=2.0),
    )
    with pytest.raises(AdapterError, match="no connection"):
        async with opened(MqttSink(cfg)):
            pass


async def test_host_name_is_checked_and_the_error_says_why(pki: Pki) -> None:
    with _tls_broker(pki, pki.wrong_host_cert, pki.wrong_host_key) as broker:
        with pytest.raises(AdapterError, match=r"(?i)TLS: .*(hostname|IP address mismatch)"):
            async with opened(MqttSink(sink_config(broker.port, **_tls(pki, connect_timeout_s=2.0)))):
                pass
        # an operator who knowingly addresses the broker by an IP its certificate lacks can turn the check off
        async with opened(MqttSink(sink_config(broker.port, **_tls(pki, tls_check_hostname=False)))) as sink:
            await sink.deliver(Result(pipeline="p", stream="s", t_ns=1, decision="ok", seq=1))
            assert sink.stats["delivered"] == 1


async def test_bad_client_key_fails_at_open_naming_the_files(tls_broker: Mosquitto, pki: Pki) -> None:
    cfg = sink_config(tls_broker.port, **_tls(pki, tls_key_file=pki.server_key))  # key of another certificate
    with pytest.raises(AdapterError, match=r"client certificate .*client\.crt"):
        await MqttSink(cfg).open()


async def test_username_and_password(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    await asyncio.to_thread(subprocess.run, ["mosquitto_passwd", "-c", "-b", str(passwd), "edge", "s3cret"], check=True)
    with Mosquitto(allow_anonymous=False, password_file=passwd) as broker:
        async with opened(MqttSink(sink_config(broker.port, username="edge", password="s3cret"))) as sink:
            await sink.deliver(Result(pipeline="p", stream="s", t_ns=1, decision="ok", seq=1))
            assert sink.stats["delivered"] == 1
        with pytest.raises(AdapterError, match="refused"):
            await MqttSink(sink_config(broker.port, username="edge", password="wrong")).open()


async def test_status_topic_online_then_offline_on_clean_close(mosquitto: Mosquitto) -> None:
    with raw_client(mosquitto.port, "plant/#") as (_, received):
        sink = MqttSink(sink_config(mosquitto.port, status_topic="plant/{id}/status"))
        await sink.open()
        online = await asyncio.to_thread(received.get, timeout=20)
        await sink.close()
        offline = await asyncio.to_thread(received.get, timeout=20)
    assert (online.topic, online.payload, online.retain) == ("plant/out/status", b"online", False)
    assert (offline.topic, offline.payload) == ("plant/out/status", b"offline")
    # retained: a late subscriber learns the state at once
    with raw_client(mosquitto.port, "plant/#") as (_, late):
        msg = await asyncio.to_thread(late.get, timeout=20)
    assert (msg.payload, msg.retain) == (b"offline", True)


_CHILD = """
import asyncio, sys
from adapters.mqtt.sink import MqttSink
from adapters.mqtt.config import MqttSinkConfig
async def main():
    cfg = MqttSinkConfig(kind="mqtt", id="crashy", port=int(sys.argv[1]), status_topic="plant/{id}/status",
                         keepalive_s=5)
    await MqttSink(cfg).open()
    print("open", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_last_will_announces_a_crashed_process(mosquitto: Mosquitto) -> None:
    """A process killed without a word: the broker itself publishes `offline` (the last will)."""
    with raw_client(mosquitto.port, "plant/#") as (_, received):
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, str(mosquitto.port), stdout=subprocess.PIPE, cwd=REPO
        )
        try:
            assert child.stdout is not None
            assert await asyncio.wait_for(child.stdout.readline(), 30) == b"open\n"
            online = await asyncio.to_thread(received.get, timeout=20)
            os.kill(child.pid, signal.SIGKILL)
            offline = await asyncio.to_thread(received.get, timeout=30)
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()
    assert (online.topic, online.payload) == ("plant/crashy/status", b"online")
    assert (offline.topic, offline.payload) == ("plant/crashy/status", b"offline")


async def test_status_topic_is_republished_after_a_reconnect(mosquitto: Mosquitto) -> None:
    async with opened(MqttSink(sink_config(mosquitto.port, status_topic="plant/{id}/status"))) as sink:
        mosquitto.stop()  # no persistence: the retained `online` is gone with the broker
        await until(lambda: sink.stats["disconnects"] == 1, what="disconnect noticed")
        mosquitto.start()
        await until(lambda: sink.stats["connects"] == 2, what="reconnect")
        with raw_client(mosquitto.port, "plant/#") as (_, received):
            msg = await asyncio.to_thread(received.get, timeout=20)
    assert (msg.payload, msg.retain) == (b"online", True)


async def test_a_full_inbox_drops_and_counts_without_waiting(caplog: pytest.LogCaptureFixture) -> None:
    """What every MQTT-borne source hands from paho's thread to its loop: bounded, oldest kept, one warning."""
    stats = Stats()
    inbox: Inbox[int] = Inbox(3, stats, "test_queue_full", "src")
    for i in range(10):
        inbox.put(i, f"t/{i}")
    assert stats["dropped"] == 7
    assert [await inbox.get() for _ in range(3)] == [0, 1, 2]
    assert 1 <= caplog.text.count("event=test_queue_full") < 7 and "source=src" in caplog.text  # not one per drop
    inbox.put(10, "t/10")
    assert await inbox.get() == 10 and stats["dropped"] == 7


async def test_inbox_wakes_the_loop_once_per_burst_and_keeps_the_order() -> None:
    """paho's thread posts; the loop drains. A burst posted while the loop is busy costs one wake-up, not one each."""
    loop = asyncio.get_running_loop()
    inbox: Inbox[int] = Inbox(1000, Stats(), "test_queue_full", "src")

    def burst(first: int) -> None:
        for i in range(first, first + 300):
            inbox.post(loop.call_soon_threadsafe, i, f"t/{i % 8}")

    poster = threading.Thread(target=burst, args=(0,))
    poster.start()
    poster.join()  # blocks the loop: nothing drains while the thread posts
    assert [await inbox.get() for _ in range(300)] == list(range(300))
    assert inbox.wakeups == 1
    await asyncio.to_thread(burst, 300)  # the loop runs meanwhile: it may drain several times, losing nothing
    assert [await inbox.get() for _ in range(300)] == list(range(300, 600))
    assert 2 <= inbox.wakeups <= 301
