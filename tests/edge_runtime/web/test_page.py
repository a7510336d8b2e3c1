"""The operator page in a real browser (Debian's headless Chromium, driven by Selenium through Debian's
chromedriver) against the running demo: simulated machines on loopback, all three models. The test watches the
results itself (its own observer) and checks that each panel draws what the pipeline produced for the result it
shows: every grain outlined and every ejected one marked, every weld box and the decision, one card per vibration
stream with its fault class and a spectrum. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from adapters.base import Result
from edge_runtime.service import Service
from edge_runtime.tools.demo import run_demo

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
# Without the background-networking flags Chromium keeps trying the internet, which a closed plant network refuses.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
TIMEOUT_S = 90.0  # a loaded 2-core machine: Chromium's start, the models' warm-up, the first frames


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromium-driver are needed: `make test` installs them with apt"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,1000"]:
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=DriverService(executable_path=driver))
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def demo() -> Iterator[tuple[Service, dict[tuple[str, int], Result]]]:
    """The demo running in a thread; yields its service and every result stored since it started."""
    results: dict[tuple[str, int], Result] = {}
    started, stop = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    def on_started(service: Service) -> None:
        service.result_observers.append(lambda r: results.__setitem__((r.pipeline, r.seq), r))
        box["service"] = service
        started.set()

    thread = threading.Thread(
        target=lambda: box.setdefault("rc", run_demo(seconds=300, on_started=on_started, stop=stop, chute_frames=30)),
        daemon=True,
    )
    thread.start()
    try:
        assert started.wait(TIMEOUT_S), "the demo's service did not start"
        yield box["service"], results
    finally:
        stop.set()
        thread.join(TIMEOUT_S)
    assert box.get("rc") == 0


def wait_for(browser: WebDriver, what: str, fn: Callable[[WebDriver], Any]) -> Any:
    return WebDriverWait(browser, TIMEOUT_S, poll_frequency=0.1).until(fn, f"timed out waiting for {what}")


def shown(browser: WebDriver, script: str) -> Any:
    """One script reads a panel at once, so a snapshot arriving meanwhile cannot mix two results."""
    return browser.execute_script(script)


RICE = """const c = document.querySelector('#rice .card'); if (!c || !c.dataset.seq) return null;
return {seq: +c.dataset.seq, grains: c.querySelectorAll('rect.grain').length,
        ejected: c.querySelectorAll('rect.grain.eject').length, said: +c.querySelector('.grains').textContent,
        image: c.querySelector('img').naturalWidth, purity: c.querySelector('.purity').textContent,
        lens: c.querySelector('.lens')?.textContent ?? null};"""
WELD = """const c = document.querySelector('#weld .card'); if (!c || !c.dataset.seq) return null;
return {seq: +c.dataset.seq, boxes: c.querySelectorAll('rect.box').length,
        labels: [...c.querySelectorAll('text.boxlabel')].map(t => t.textContent.split(' ')[0]),
        decision: c.querySelector('.decision').textContent, strip: c.querySelectorAll('.strip span').length,
        image: c.querySelector('img').naturalWidth};"""
VIBRATION = """return [...document.querySelectorAll('#vibration .card')].map(c => ({stream: c.dataset.stream,
        seq: +c.dataset.seq, label: c.querySelector('.label').textContent,
        severity: c.querySelector('.severity')?.textContent ?? null,
        spectrum: +c.querySelector('svg.spectrum').dataset.points,
        history: +c.querySelector('svg.anomaly-history').dataset.points}));"""
TABLES = """const rows = (sel) => [...document.querySelectorAll(sel + ' tbody tr')].map(r =>
        [...r.children].map(td => td.textContent));
return {devices: rows('#devices'), pipelines: rows('#pipelines'), sinks: rows('#sinks'), machines: rows('#machines'),
        updates: +document.getElementById('status').dataset.updates};"""


def test_the_page_draws_what_the_pipelines_produced(
    browser: WebDriver, demo: tuple[Service, dict[tuple[str, int], Result]]
) -> None:
    service, results = demo
    assert service.ui is not None, "the demo serves the operator page"
    browser.get(service.ui.url)
    wait_for(browser, "the first snapshots", lambda b: shown(b, TABLES)["updates"] >= 2)

    # Rice: a later frame than the first one shown (the page is live), drawn against the test's own record.
    first = wait_for(browser, "a rice frame", lambda b: shown(b, RICE))
    rice = wait_for(
        browser,
        "a new rice frame the test has seen",
        lambda b: (r := shown(b, RICE)) and r["seq"] > first["seq"] and ("rice", r["seq"]) in results and r,
    )
    grains = results[("rice", rice["seq"])].detail["grains"]
    assert rice["grains"] == rice["said"] == len(grains) > 0
    assert rice["ejected"] == sum(bool(g["eject"]) for g in grains)
    assert rice["image"] > 0, "the frame decoded in the browser"
    assert rice["purity"].endswith("%")
    transmission = results[("rice", rice["seq"])].values.get("lens_transmission")  # the demo's lens_fog layer
    assert isinstance(transmission, float) and rice["lens"] is not None
    assert float(rice["lens"].split()[0]) == pytest.approx(100 * transmission, abs=0.51)

    first = wait_for(browser, "a weld frame", lambda b: shown(b, WELD))
    weld = wait_for(
        browser,
        "a new weld frame the test has seen",
        lambda b: (w := shown(b, WELD)) and w["seq"] > first["seq"] and ("weld", w["seq"]) in results and w,
    )
    produced = results[("weld", weld["seq"])]
    assert weld["decision"] == produced.decision
    assert weld["boxes"] == len(produced.detail["boxes"])
    assert weld["labels"] == [b["label"] for b in produced.detail["boxes"]]
    assert weld["strip"] >= 2 and weld["image"] > 0

    streams = {r.stream for (pipeline, _), r in list(results.items()) if pipeline == "vibration"}
    cards = wait_for(
        browser,
        "a vibration card per stream, each showing a result the test has seen",
        lambda b: (
            (v := shown(b, VIBRATION))
            and {c["stream"] for c in v} >= streams
            and all(("vibration", c["seq"]) in results for c in v)
            and v
        ),
    )
    for c in cards:
        assert c["label"] == results[("vibration", c["seq"])].label, c["stream"]
        assert c["spectrum"] == 256 and c["history"] >= 1, c["stream"]
        velocity = results[("vibration", c["seq"])].values["velocity_rms_mm_s"]
        assert isinstance(velocity, float) and c["severity"] is not None, c["stream"]
        assert float(c["severity"].split()[0]) == pytest.approx(velocity, abs=0.006), c["stream"]

    tables = shown(browser, TABLES)
    assert {row[0] for row in tables["devices"]} == {d.id for d in service.deployment.devices}
    assert {row[0] for row in tables["pipelines"]} == {"vibration", "rice", "weld"}
    assert {row[0] for row in tables["sinks"]} == {"results", "scada", "ejectors"}
    rice_row = next(row for row in tables["pipelines"] if row[0] == "rice")
    assert float(rice_row[1]) > 0, "rice inputs/s"
    machines = {row[0]: row[1] for row in tables["machines"]}
    assert "plc1.parts_count" in machines
    wait_for(
        browser,
        "the packing PLC's parts counter to move on the page",
        lambda b: (
            {r[0]: r[1] for r in shown(b, TABLES)["machines"]}["plc1.parts_count"] != machines["plc1.parts_count"]
        ),
    )

    ARTIFACTS.mkdir(exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, int(height) + 40)
    wait_for(browser, "a snapshot after the resize", lambda b: shown(b, RICE) is not None)
    assert browser.save_screenshot(str(ARTIFACTS / "operator_page.png"))
