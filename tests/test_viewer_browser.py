"""The viewer in a real browser: Debian's headless Chromium driven by Playwright.

A uvicorn server runs the viewer on a free loopback port with the bundled phantom model set (the
tiny test models where it is not there), serving two default-size phantoms. The test opens a
case, clicks on a lesion with the mouse, and checks that the mask changed; it prints the click's
round trip (request, CPU inference, mask back, drawn). ``--screenshots DIR`` keeps the
screenshots.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import cc3d
import numpy as np
import pytest
import uvicorn

from petloop.inference.modelset import load_model_set
from petloop.inference.pipeline import Pipeline
from petloop.io.layouts import find_cases
from petloop.phantom import PhantomConfig, write_phantoms
from petloop.server.app import ServerConfig, create_app

CHROMIUM = Path("/usr/bin/chromium")
BUNDLED = Path(__file__).resolve().parents[1] / "models" / "phantom"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def viewer(model_set, tmp_path_factory):
    models = BUNDLED if (BUNDLED / "manifest.json").is_file() else model_set
    data = tmp_path_factory.mktemp("viewer") / "phantoms"
    write_phantoms(PhantomConfig(seed=777, tracer="fdg", negative_fraction=0.0, lesions=(3, 5)),
                   data, 2)
    app = create_app(Pipeline(load_model_set(models)), ServerConfig(data=data))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", data, models == BUNDLED
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.is_file(), (f"{CHROMIUM} is missing: `make test` installs Debian's chromium "
                                "and chromium-driver packages")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


def test_click_on_a_lesion_updates_the_mask(viewer, browser, tmp_path, request, capsys):
    url, data, bundled = viewer
    files = find_cases(data)[0]
    label = files.load().label.array
    cc = cc3d.connected_components(label > 0, connectivity=18)
    largest = np.argmax(np.bincount(cc.ravel())[1:]) + 1
    target = [int(round(v)) for v in np.argwhere(cc == largest).mean(axis=0)]
    if cc[tuple(target)] != largest:  # a concave lesion: take one of its voxels
        target = [int(v) for v in np.argwhere(cc == largest)[0]]

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_function("document.querySelector('#case-select').value !== ''")
    page.select_option("#case-select", files.case_id)
    page.click("#open-case")
    page.wait_for_function("window.petloop.maskVersion === 0 && window.petloop.report",
                           timeout=180_000)
    before = page.evaluate("(window.__before = window.petloop.mask.slice())"
                           ".reduce((a, b) => a + b, 0)")
    page.evaluate("(p) => window.petloopViewer.goTo(p)", target)
    x, y = page.evaluate("(p) => window.petloopViewer.screenPoint('axial', p)", target)
    page.screenshot(path=str(tmp_path / "viewer_open.png"))

    t0 = time.perf_counter()
    page.mouse.click(x, y)
    page.wait_for_function("window.petloop.maskVersion === 1 && window.petloop.inflight === 0",
                           timeout=120_000)
    round_trip = time.perf_counter() - t0
    in_page = page.evaluate("window.petloop.lastRoundTrip") / 1000
    clicked = page.evaluate("window.petloop.session.clicks")
    assert [c["kind"] for c in clicked] == ["tumor"] and clicked[0]["point"] == target
    assert page.inner_text("#click-count") == "1"
    after = page.evaluate("Array.from(window.petloop.mask).reduce((a, b) => a + b, 0)")
    changed = page.evaluate("window.petloop.mask.reduce((a, v, n) => a + (v !== "
                            "window.__before[n]), 0)")
    if bundled:  # a trained model: the tumor click changes the mask itself
        assert changed > 0, "the mask did not change after a tumor click on a lesion"
        hit = page.evaluate("(p) => window.petloop.mask[p[0] + window.petloop.shape[0] * "
                            "(p[1] + window.petloop.shape[1] * p[2])]", target)
        assert hit == 1, "the clicked lesion voxel is not in the mask"
    page.screenshot(path=str(tmp_path / "viewer.png"))

    # a background click (right button), then undo with the keyboard
    page.mouse.click(x + 40, y + 40, button="right")
    page.wait_for_function("window.petloop.session.clicks.length === 2 && "
                           "window.petloop.inflight === 0", timeout=120_000)
    assert page.evaluate("window.petloop.session.clicks[1].kind") == "background"
    page.keyboard.press("u")
    page.wait_for_function("window.petloop.session.clicks.length === 1 && "
                           "window.petloop.inflight === 0", timeout=120_000)
    assert page.inner_text("#click-count") == "1"
    rows = page.locator("#report-table tbody tr").count()
    assert rows == page.evaluate("window.petloop.report.lesion_count")
    assert not errors, errors

    with capsys.disabled():
        print(f"\nviewer click round trip: {round_trip:.2f} s in the test, {in_page:.2f} s "
              f"in the page (shape {page.evaluate('window.petloop.shape')}, "
              f"{'bundled phantom models' if bundled else 'tiny test models'}); "
              f"mask {before} -> {after} voxels, {changed} changed")
    keep = request.config.getoption("--screenshots")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in tmp_path.glob("*.png"):
            shutil.copy(png, Path(keep) / png.name)
