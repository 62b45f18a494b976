"""The viewer in a real browser: Debian's headless Chromium driven by Playwright.

A uvicorn server runs the viewer on a free loopback port with the bundled phantom model set (the
tiny test models where it is not there), serving two default-size phantoms. The test opens a
case, clicks on a lesion with the mouse, and checks that the mask changed; it prints the click's
round trip (request, CPU inference, mask back, drawn). ``--screenshots DIR`` keeps the
screenshots.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import cc3d
import numpy as np
import pytest
from serving import serving

from petloop.clicks.clicklist import ClickList
from petloop.inference.modelset import load_model_set
from petloop.inference.pipeline import Pipeline, TTAChoice
from petloop.io.layouts import find_cases
from petloop.models import BUNDLED_MODEL_SET
from petloop.phantom import PhantomConfig, write_phantoms
from petloop.server.app import ServerConfig, create_app

CHROMIUM = Path("/usr/bin/chromium")
BUNDLED = BUNDLED_MODEL_SET
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def viewer(model_set, tmp_path_factory):
    models = BUNDLED if (BUNDLED / "manifest.json").is_file() else model_set
    data = tmp_path_factory.mktemp("viewer") / "phantoms"
    # an adult trunk on the demo's grid: the bundled set answers a click in seconds there
    write_phantoms(PhantomConfig.preset("trunk", seed=777, tracer="fdg", negative_fraction=0.0,
                                        lesions=(3, 5)), data, 2)
    app = create_app(Pipeline(load_model_set(models)), ServerConfig(data=data))
    with serving(app) as url:
        yield url, data, models == BUNDLED


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

    # a scribble: drag across the lesion in scribble mode; the stroke's voxels reach the server
    # as one change, are drawn on the slice and listed as one stroke; undo takes it away whole
    page.keyboard.press("s")
    assert page.get_attribute("#scribble", "aria-pressed") == "true"
    version = page.evaluate("window.petloop.maskVersion")
    page.mouse.move(x - 12, y - 6)
    page.mouse.down()
    for n in range(1, 9):
        page.mouse.move(x - 12 + 3 * n, y - 6 + 1.5 * n)
    page.mouse.up()
    page.wait_for_function(f"window.petloop.maskVersion === {version + 1} && "
                           "window.petloop.inflight === 0", timeout=120_000)
    voxels = page.evaluate("window.petloop.session.clicks.filter((c) => c.stroke === 1)")
    assert len(voxels) >= 5 and {v["kind"] for v in voxels} == {"tumor"}
    assert {v["point"][2] for v in voxels} == {target[2]}  # drawn on the axial slice
    assert page.inner_text("#stroke-count") == "1" and page.inner_text("#click-count") == "1"
    assert page.locator("#click-list li.stroke").count() == 1
    page.screenshot(path=str(tmp_path / "viewer_stroke.png"))
    page.keyboard.press("u")
    page.wait_for_function("window.petloop.session.clicks.length === 1 && "
                           "window.petloop.inflight === 0", timeout=120_000)
    assert page.inner_text("#stroke-count") == "0"
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


class BoxesInference:
    """Stands in for the inference session at full size (the viewer is what is tested here):
    each tumour click marks a cube, the first mask comes after a delay, and each result says
    which box of the mask changed, as the engine's results do."""

    HALF = 6

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.ct = self.pet = self.last = None
        self.clicks = ClickList()
        self.tracer = SimpleNamespace(tracer="fdg", probability=1.0)
        self.steps = 0

    def set_case(self, ct, pet, tracer="auto", ct_name="CT", pet_name="PET"):
        self.ct, self.pet = ct, pet

    def _box(self, p):
        return tuple((max(0, c - self.HALF), min(n, c + self.HALF + 1))
                     for c, n in zip(p, self.pet.shape, strict=True))

    def change(self, new, time_budget=None):
        new.clicks.check_inside(self.pet.shape, "click")
        if self.steps == 0:
            time.sleep(3.0)  # the first mask takes a while: the page draws the images meanwhile
        mask = np.zeros(self.pet.shape, np.uint8)
        for p in new.clicks.tumor:
            mask[tuple(slice(a, b) for a, b in self._box(p))] = 1
        moved = set(self.clicks.items) ^ set(new.items)
        boxes = [self._box(c.point) for c in moved]
        changed = (tuple((min(b[a][0] for b in boxes), max(b[a][1] for b in boxes))
                         for a in range(3)) if boxes else None)
        if self.steps == 0:
            changed = tuple((0, n) for n in self.pet.shape)
        self.steps += 1
        self.clicks = new
        self.last = SimpleNamespace(mask=self.pet.with_array(mask), model="boxes",
                                    seconds={"total": 0.0, "network": 0.0},
                                    tta=TTAChoice(0.0, None, ()), clicks=new, changed=changed)
        return self.last

    def close(self, wait=True):
        pass


def test_a_case_on_the_autopet_grid_opens_before_its_first_mask_and_takes_clicks(
        browser, tmp_path_factory, monkeypatch, capsys):
    """400 x 400 x 326 at 2.0364 x 2.0364 x 3 mm: the page draws the images while the server
    makes the first mask, a click made meanwhile waits its turn, and the masks come back as
    the boxes that changed and add up to the server's mask."""
    monkeypatch.setattr("petloop.server.sessions.Session", BoxesInference)
    data = tmp_path_factory.mktemp("autopet") / "phantoms"
    write_phantoms(PhantomConfig(seed=5, tracer="fdg", shape=(400, 400, 326),
                                 spacing=(2.0364, 2.0364, 3.0), negative_fraction=0.0,
                                 lesions=(3, 5)), data, 1)
    target = [200, 190, 160]
    boxes = SimpleNamespace(model_set=SimpleNamespace(name="boxes", models={}, root=None,
                                                      tracer_classifier=None))
    app = create_app(boxes, ServerConfig(data=data))
    with serving(app) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.wait_for_function("document.querySelector('#case-select').value !== ''")
        t0 = time.perf_counter()
        page.click("#open-case")
        page.wait_for_function("window.petloop.openSeconds !== undefined", timeout=120_000)
        opened = time.perf_counter() - t0
        assert page.evaluate("window.petloop.shape") == [400, 400, 326]
        assert page.evaluate("window.petloop.maskVersion") == -1  # images first, mask later
        page.evaluate("(p) => window.petloopViewer.goTo(p)", target)
        x, y = page.evaluate("(p) => window.petloopViewer.screenPoint('axial', p)", target)
        page.screenshot(path=str(tmp_path_factory.getbasetemp() / "autopet_open.png"))
        page.mouse.click(x, y)  # before the first mask: it queues behind it
        page.wait_for_function("window.petloop.maskVersion === 1 && "
                               "window.petloop.inflight === 0", timeout=120_000)
        clicked = page.evaluate("window.petloop.session.clicks")[0]["point"]
        page.mouse.click(x + 60, y + 60)
        page.wait_for_function("window.petloop.maskVersion === 2 && "
                               "window.petloop.inflight === 0", timeout=120_000)
        page.keyboard.press("u")  # undo: the second cube goes, through a changed box
        page.wait_for_function("window.petloop.maskVersion === 3 && "
                               "window.petloop.inflight === 0", timeout=120_000)
        total = page.evaluate("Array.from(window.petloop.mask).reduce((a, b) => a + b, 0)")
        sid = page.evaluate("window.petloop.session.id")
        snap = app.state.store.get(sid).snapshot
        assert snap.changed != tuple((0, n) for n in (400, 400, 326))  # a box, not the whole
        assert total == int(snap.mask.array.sum()) == 13 ** 3
        inside = page.evaluate("(p) => window.petloop.mask[p[0] + 400 * (p[1] + 400 * p[2])]",
                               clicked)
        assert inside == 1 and page.evaluate("window.petloop.mipMask.reduce((a, b) => a + b)") \
            == 13 * 13
        assert not errors, errors
    with capsys.disabled():
        print(f"\n400 x 400 x 326 case: images drawn {opened:.1f} s after Open "
              f"({page.evaluate('window.petloop.openSeconds'):.1f} s in the page)")
