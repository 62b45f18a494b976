"""The viewer's server under hostile and broken input (project issue 23).

Most tests run the real application over a stand-in pipeline (no network: the images are
checked as the real session checks them, and a prediction marks the clicked voxels, waiting on
a gate where a test wants inference to look busy), so they are quick; the CLI tests run
``petloop serve`` itself."""

from __future__ import annotations

import gc
import gzip
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
import weakref
import zlib
from dataclasses import replace
from types import SimpleNamespace

import anyio
import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from petloop.clicks.clicklist import ClickList
from petloop.inference.pipeline import TTAChoice
from petloop.io.checks import check_ct, check_pet
from petloop.io.volume import ReadLimits, Volume, write_volume
from petloop.models import BUNDLED_MODEL_SET
from petloop.server import memory
from petloop.server.app import ServerConfig, create_app
from petloop.server.inputs import MIN_AXIS, check_grid, public_message, resampled_voxels
from petloop.server.sessions import QueueFull, SessionStore, ViewerSession, add_click

SHAPE = (16, 16, 12)
MODELS = BUNDLED_MODEL_SET


# a pipeline without a network -------------------------------------------------------------------
class FakePipeline:
    def __init__(self, setup_delay: float = 0.0):
        self.model_set = SimpleNamespace(name="fake", models={}, tracer_classifier=None,
                                         root=None)
        self.gate = threading.Event()  # predictions wait until it is set
        self.gate.set()
        self.setup_delay = setup_delay
        self.running = 0  # predictions started


class FakeInner:
    """The inference session's part the server uses: set_case checks the images as the real
    one does; run() marks the tumour clicks once the pipeline's gate is open."""

    def __init__(self, pipeline: FakePipeline):
        self.pipeline = pipeline
        self.ct = self.pet = self.last = None
        self.clicks = ClickList()

    def set_case(self, ct, pet, tracer="auto", ct_name="CT", pet_name="PET"):
        check_pet(pet, pet_name)
        check_ct(ct, ct_name)
        time.sleep(self.pipeline.setup_delay)
        self.ct, self.pet = ct, pet
        self.tracer = SimpleNamespace(tracer="fdg", probability=1.0)

    def change(self, new, time_budget=None):
        new.clicks.check_inside(self.pet.shape, "click")
        self.pipeline.running += 1
        assert self.pipeline.gate.wait(60)
        mask = np.zeros(self.pet.shape, np.uint8)
        for p in new.clicks.tumor:
            mask[p] = 1
        self.clicks = new
        self.last = SimpleNamespace(mask=self.pet.with_array(mask), model="fake",
                                    seconds={"total": 0.01}, tta=TTAChoice(0.0, None, ()),
                                    clicks=new, changed=tuple((0, n) for n in self.pet.shape))
        return self.last

    def close(self, wait=True):
        pass


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr("petloop.server.sessions.Session", FakeInner)
    return FakePipeline()


@pytest.fixture
def serve(fake):
    """``serve(**config)``: a test client of the app over the fake pipeline (lifespan run)."""
    clients = []

    def start(**kwargs):
        c = TestClient(create_app(fake, ServerConfig(**kwargs)))
        clients.append(c.__enter__())
        return c

    yield start
    for c in clients:
        c.__exit__(None, None, None)


def images(shape=SHAPE, spacing=(4.0, 4.0, 6.0)) -> tuple[Volume, Volume]:
    rng = np.random.default_rng(5)
    pet = Volume((0.5 + rng.random(shape) * 2).astype(np.float32), spacing)
    ct = pet.with_array(rng.normal(0, 100, shape).astype(np.float32))
    return ct, pet


@pytest.fixture
def upload_files(tmp_path):
    ct, pet = images()
    return (write_volume(ct, tmp_path / "ct.nii.gz").read_bytes(),
            write_volume(pet, tmp_path / "pet.nii.gz").read_bytes())


def upload(client, ct: tuple[str, bytes], pet: tuple[str, bytes], **data):
    return client.post("/api/sessions/upload", files={"ct": ct, "pet": pet}, data=data)


def open_one(client, upload_files) -> str:
    r = upload(client, ("ct.nii.gz", upload_files[0]), ("pet.nii.gz", upload_files[1]))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def no_leak(r, *paths) -> None:
    """A JSON body that names no server path, no temporary file, says nothing of files."""
    body = r.text
    r.json()
    for p in (tempfile.gettempdir() + os.sep, "petloop-upload", *map(str, paths)):
        assert p not in body, (p, body)
    assert "no such file" not in body.lower() and "root:" not in body


# 1. files the upload points at ------------------------------------------------------------------
def mha(data_file: str, shape=SHAPE) -> bytes:
    dims = " ".join(map(str, shape))
    return (f"ObjectType = Image\nNDims = 3\nDimSize = {dims}\nElementType = MET_UCHAR\n"
            f"ElementSpacing = 4 4 6\nElementDataFile = {data_file}\n").encode()


@pytest.mark.parametrize("data_file", [
    "/etc/passwd", "../../../../../../etc/passwd", "/no/such/folder/pet.raw", "pet.raw",
    "LIST", "pet_%03d.raw 1 12 1"])
def test_an_upload_never_reads_another_file(serve, upload_files, data_file, tmp_path):
    (tmp_path / "pet.raw").write_bytes(bytes(int(np.prod(SHAPE))))
    client = serve()
    r = upload(client, ("ct.nii.gz", upload_files[0]), ("pet.mha", mha(data_file)))
    assert r.status_code == 422, r.text
    assert "PET upload 'pet.mha'" in r.json()["detail"] and "LOCAL" in r.json()["detail"]
    no_leak(r, tmp_path)
    assert client.app.state.store.reserved == 0 and len(client.app.state.store) == 0


# 2. memory: size bombs and gzip bombs -----------------------------------------------------------
def nifti_header(shape, dtype=np.float32) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_data_offset(352)
    return hdr.binaryblock + b"\0" * 4


def gzip_of_zeros(head: bytes, zeros: int, chunk: int = 1 << 24) -> bytes:
    """A valid gzip file of ``head`` and then ``zeros`` zero bytes, built without compressing
    them: after a full flush, deflate codes each equal chunk the same way."""
    assert zeros % chunk == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head)
    zero_chunk = bytes(chunk)
    for _ in range(zeros // chunk):
        crc = zlib.crc32(zero_chunk, crc)
    size = (len(head) + zeros) & 0xFFFFFFFF
    return (b"\x1f\x8b\x08\x00\0\0\0\0\x02\xff" + start + block * (zeros // chunk) + end
            + struct.pack("<II", crc, size))


def peak_growth(fn):
    """``fn()`` and how far memory grew while it ran: tracemalloc's peak (numpy's and Python's
    allocations) and, on Linux, the resident set's high-water mark (reset beforehand)."""
    gc.collect()
    memory.release_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm = True
    except OSError:
        hwm = False
    rss0 = _status("VmRSS") if hwm else 0
    tracemalloc.start()
    try:
        result = fn()
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rss = _status("VmHWM") - rss0 if hwm else 0
    return result, max(traced, rss)


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def test_the_bombs_built_here_are_what_they_claim(tmp_path):
    bomb = gzip_of_zeros(b"head", 2 << 24)
    assert gzip.decompress(bomb) == b"head" + bytes(2 << 24)
    path = tmp_path / "size.nii.gz"
    path.write_bytes(gzip.compress(nifti_header((1000, 1000, 1000)) + bytes(16)))
    assert nib.load(path).shape == (1000, 1000, 1000) and path.stat().st_size < 2000


def test_size_and_gzip_bombs_cost_no_memory(serve, upload_files):
    client = serve(max_upload_mb=16)
    ct = ("ct.nii.gz", upload_files[0])
    size_bomb = gzip.compress(nifti_header((1000, 1000, 1000)) + bytes(64))  # 4 GB declared
    assert len(size_bomb) < 2000
    declared_gib = gzip_of_zeros(nifti_header((1024, 1024, 1024), np.uint8), 1 << 30)
    small_header = gzip_of_zeros(nifti_header((64, 64, 64)), 1 << 30)  # 1 GiB after 1 MiB
    assert len(declared_gib) < 4 << 20 and len(small_header) < 4 << 20

    answers, grown = peak_growth(lambda: [
        upload(client, ct, ("pet.nii.gz", size_bomb)),
        upload(client, ct, ("pet.nii.gz", declared_gib)),
        upload(client, ("ct.nii.gz", declared_gib), ("pet.nii.gz", upload_files[1])),
        upload(client, ct, ("pet.nii.gz", small_header))])
    assert grown < 300 * 2**20, f"memory grew by {grown / 2**20:.0f} MiB"
    assert [r.status_code for r in answers] == [413, 413, 413, 422], [r.text for r in answers]
    assert "1000 x 1000 x 1000" in answers[0].json()["detail"]
    assert answers[2].json()["detail"].startswith("CT upload 'ct.nii.gz'")
    assert "SUV" in answers[3].json()["detail"] or "above 0" in answers[3].json()["detail"]
    for r in answers:
        no_leak(r)


def test_upload_limits_follow_the_configuration(serve, upload_files):
    client = serve(read_limits=ReadLimits(max_voxels=1000))
    r = upload(client, ("ct.nii.gz", upload_files[0]), ("pet.nii.gz", upload_files[1]))
    assert r.status_code == 413 and "1,000 voxels" in r.json()["detail"]


# 3. malformed requests: 4xx with a JSON body, never 500 -----------------------------------------
def test_malformed_clicks_are_422_with_json(serve, upload_files):
    client = serve()
    sid = open_one(client, upload_files)
    url = f"/api/sessions/{sid}/clicks"
    bodies = [b'{"kind": "tumor", "point": [NaN, 2, 3]}',
              b'{"kind": "tumor", "point": [Infinity, 2, 3]}',
              b'{"kind": "tumor", "point": [-Infinity, 2, 3]}',
              b'{"kind": "tumor", "point": [1e400, 2, 3]}',
              b'{"kind": "tumor", "point": [2.5, 2, 3]}',
              b'{"kind": "tumor", "point": [true, 2, 3]}',
              b'{"kind": "tumor", "point": ["1", 2, 3]}',
              b'{"kind": "tumor", "point": [100000000000000000000000000000, 2, 3]}',
              b'{"kind": NaN, "point": [1, 2, 3]}',
              b'{"kind": "tumor", "point": [1, 2]}',
              b'{"kind": "tumor", "point": NaN}',
              b'NaN', b'[', b'{"kind": "tumor", "point": [1, 2, 3]']
    for body in bodies:
        r = client.post(url, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (body, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, list) and all({"loc", "msg", "type"} <= set(e) for e in detail)
        assert "NaN" not in r.text and "Infinity" not in r.text
    ok = client.post(url, json={"kind": "tumor", "point": [1, 2, 3]})
    assert ok.status_code == 200 and ok.json()["version"] == 1
    r = client.post("/api/sessions", content=b'{"case": NaN}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "NaN" not in r.text


@pytest.mark.parametrize("shape", [(1294, 1, 1), (1, 64, 64), (64, 64, MIN_AXIS - 1)])
def test_a_tiny_image_is_refused_before_inference(serve, fake, tmp_path, shape):
    client = serve()
    ct, pet = images(shape)
    r = upload(client, ("ct.nii.gz", write_volume(ct, tmp_path / "ct.nii.gz").read_bytes()),
               ("pet.nii.gz", write_volume(pet, tmp_path / "pet.nii.gz").read_bytes()))
    assert r.status_code == 422, r.text
    assert f"at least {MIN_AXIS}" in r.json()["detail"] and fake.running == 0
    no_leak(r, tmp_path)


def test_a_spacing_that_would_explode_the_resampled_grid_is_refused():
    ct, pet = images((64, 64, 64), spacing=(4.0, 4.0, 6.0))
    plans = [((0, 1, 2), (4.0, 3.0, 3.0))]
    assert resampled_voxels(pet, *plans[0]) == 96 * 85 * 85  # (k, j, i): 6, 4, 4 mm to 4, 3, 3
    check_grid(pet, "PET", ReadLimits(), plans)
    huge = Volume(pet.array, (1000.0, 1000.0, 1000.0))
    with pytest.raises(ValueError, match="resampled"):
        check_grid(huge, "PET", ReadLimits(), plans)


@pytest.mark.parametrize("field", ["TransformMatrix = 0 0 0 0 0 0 0 0 0",
                                   "TransformMatrix = nan 0 0 0 1 0 0 0 1",
                                   "ElementSpacing = 0 4 6", "ElementSpacing = inf 4 6"])
def test_a_degenerate_geometry_is_refused(serve, tmp_path, field):
    client = serve()
    ct, pet = images()
    raw = write_volume(pet, tmp_path / "pet.mha", compress=False).read_bytes()
    key = field.split(" = ")[0].encode()
    bad = re.sub(key + rb" = [^\n]*", field.encode(), raw, count=1)
    assert bad != raw
    r = upload(client, ("ct.mha", write_volume(ct, tmp_path / "ct.mha").read_bytes()),
               ("pet.mha", bad))
    assert r.status_code == 422, r.text
    assert "PET" in r.json()["detail"]
    no_leak(r, tmp_path)


# 4. no server paths in answers ------------------------------------------------------------------
def test_errors_name_no_server_path(serve, fake, tmp_path, upload_files):
    data = tmp_path / "cases"
    study = data / "PATIENT1" / "STUDY1"
    study.mkdir(parents=True)
    (study / "SUV.nii.gz").write_bytes(b"not an image at all")
    (study / "CTres.nii.gz").write_bytes(upload_files[0])
    client = serve(data=data)
    names = [c["name"] for c in client.get("/api/cases").json()]
    assert names == ["PATIENT1_STUDY1"]
    r = client.post("/api/sessions", json={"case": names[0]})
    assert r.status_code == 422, r.text
    assert "PATIENT1/STUDY1/SUV.nii.gz" in r.json()["detail"]
    no_leak(r, data, data.resolve(), tmp_path)
    for content in (b"garbage", gzip.compress(b"garbage" * 100), upload_files[0][:200]):
        r = upload(client, ("ct.nii.gz", upload_files[0]), ("pet.nii.gz", content))
        assert r.status_code == 422 and r.json()["detail"].startswith("PET upload")
        no_leak(r, tmp_path)
    r = upload(client, ("ct.mha", upload_files[0]), ("pet.nii.gz", upload_files[1]))
    assert r.status_code == 422
    no_leak(r, tmp_path)


def test_public_message_cuts_roots(tmp_path):
    root = tmp_path / "data"
    text = f"{root}/a/b.nii.gz: bad; {root}: empty; {tempfile.gettempdir()}/petloop-upload-x/y"
    out = public_message(text, {root: ""})
    assert out == "a/b.nii.gz: bad; .: empty; (a temporary file)"


# 5. concurrency: the session limit, the change queue, reads that never wait --------------------
def test_concurrent_opens_never_exceed_max_sessions(serve, fake, upload_files):
    client = serve(max_sessions=16)
    for _ in range(5):
        open_one(client, upload_files)
    fake.setup_delay = 0.05
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(upload(
        client, ("ct.nii.gz", upload_files[0]), ("pet.nii.gz", upload_files[1])).status_code))
        for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    store = client.app.state.store
    assert sorted(codes) == [201] * 11 + [503] * 9, codes
    assert len(store) == 16 and store.reserved == 0
    assert client.get("/api/health").json()["sessions"] == 16


def test_reads_answer_while_clicks_queue_and_a_flood_gets_429(serve, fake, upload_files):
    client = serve(max_pending=8)
    sid = open_one(client, upload_files)
    other = open_one(client, upload_files)
    fake.gate.clear()  # every prediction now waits
    url = f"/api/sessions/{sid}/clicks"
    codes, headers = [], []

    def click(n):
        r = client.post(url, json={"kind": "tumor", "point": [n % 16, n // 16, 0]})
        codes.append(r.status_code)
        headers.append(r.headers.get("retry-after"))

    clicks = [threading.Thread(target=click, args=(n,)) for n in range(60)]
    for t in clicks:
        t.start()
    deadline = time.monotonic() + 60
    while len(codes) < 51 and time.monotonic() < deadline:  # the refused ones answer at once
        time.sleep(0.02)
    assert sorted(codes) == [429] * 51, codes
    assert all(h is not None and int(h) >= 1 for h in headers)

    reads = {}

    def read():
        for path in (f"/api/sessions/{sid}", f"/api/sessions/{sid}/mask",
                     f"/api/sessions/{sid}/report", f"/api/sessions/{sid}/report.csv",
                     f"/api/sessions/{sid}/volume/pet", f"/api/sessions/{sid}/volume/ct",
                     f"/api/sessions/{sid}/mask.nii.gz", f"/api/sessions/{other}",
                     "/api/health", "/api/cases"):
            reads[path] = client.get(path).status_code

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(60)
    assert not fake.gate.is_set() and len(reads) == 10, reads  # done while clicks wait
    assert set(reads.values()) == {200}, reads
    assert client.get(f"/api/sessions/{sid}").json()["version"] == 0
    fake.gate.set()
    for t in clicks:
        t.join(60)
    assert sorted(codes) == [200] * 9 + [429] * 51
    state = client.get(f"/api/sessions/{sid}").json()
    assert state["version"] == 9 and len(state["clicks"]) == 9


def test_a_change_queued_on_a_deleted_session_is_dropped(serve, fake, upload_files):
    client = serve()
    sid = open_one(client, upload_files)
    fake.gate.clear()
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(client.post(
        f"/api/sessions/{sid}/undo").status_code)) for _ in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while fake.running < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.delete(f"/api/sessions/{sid}").status_code == 204
    fake.gate.set()
    for t in threads:
        t.join(30)
    assert sorted(codes) == [200, 404, 404]
    assert fake.running == 2  # the set-up's prediction and the one running at the delete


def test_a_waiting_change_that_is_cancelled_passes_its_turn():
    pipeline = FakePipeline()
    pipeline.gate.clear()
    s = ViewerSession("id", "case", FakeInner(pipeline), threading.Lock(), max_pending=2)
    s.inner.set_case(*images())
    done = []

    async def main():
        async with anyio.create_task_group() as tg:
            async def change(n, scope=None):
                t = s.ticket()
                with scope or anyio.CancelScope():
                    snap = await s.apply_async(t, add_click("tumor", (n, 0, 0)))
                    done.append((n, snap.version))

            cancelled = anyio.CancelScope()
            tg.start_soon(change, 0)
            await anyio.sleep(0.05)
            tg.start_soon(change, 1, cancelled)
            await anyio.sleep(0.05)
            tg.start_soon(change, 2)
            await anyio.sleep(0.05)
            with pytest.raises(QueueFull):
                s.ticket()
            cancelled.cancel()
            await anyio.sleep(0.05)
            pipeline.gate.set()

    anyio.run(main)
    assert done == [(0, 0), (2, 1)]
    assert [c.point[0] for c in s.snapshot.clicks] == [0, 2] and not s.busy


def test_a_failed_set_up_gives_its_slot_back(monkeypatch):
    monkeypatch.setattr("petloop.server.sessions.Session", FakeInner)
    store = SessionStore(FakePipeline(), max_sessions=1)
    ct, pet = images()
    with pytest.raises(ValueError, match="NaN"):
        store.create("bad", ct, pet.with_array(np.full(SHAPE, np.nan, np.float32)))
    assert store.reserved == 0 and len(store) == 0
    store.create("good", ct, pet)
    with pytest.raises(RuntimeError, match="1 sessions are open"):
        store.reserve()


# 6. memory given back when sessions end ---------------------------------------------------------
def test_a_deleted_session_frees_its_arrays(serve, upload_files, monkeypatch):
    calls = []
    real = memory.release_memory
    monkeypatch.setattr("petloop.server.app.release_memory", lambda: calls.append(1) or real())
    client = serve()
    sid = open_one(client, upload_files)
    client.post(f"/api/sessions/{sid}/clicks", json={"kind": "tumor", "point": [3, 3, 3]})
    for which in ("ct", "pet"):
        assert client.get(f"/api/sessions/{sid}/volume/{which}").status_code == 200
    session = client.app.state.store.get(sid)
    refs = [weakref.ref(a) for a in (session.pet.array, session.ct.array,
                                     session.snapshot.mask.array)]
    refs.append(weakref.ref(session))
    del session
    assert client.delete(f"/api/sessions/{sid}").status_code == 204
    assert calls, "delete gives memory back"
    gc.collect()
    assert [r() is None for r in refs] == [True] * 4


def test_an_expired_session_frees_its_arrays(serve, upload_files, monkeypatch):
    client = serve(ttl_seconds=0.3)
    sid = open_one(client, upload_files)
    ref = weakref.ref(client.app.state.store._sessions[sid].pet.array)
    deadline = time.monotonic() + 20
    while ref() is not None and time.monotonic() < deadline:  # the sweeper runs every second
        time.sleep(0.1)
    assert ref() is None and len(client.app.state.store) == 0
    assert client.get(f"/api/sessions/{sid}").status_code == 404


def test_release_memory_trims_the_heap_where_glibc_is():
    released = memory.release_memory()
    if sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION"):
        assert released


# 7. temporary folders ---------------------------------------------------------------------------
def test_the_upload_folder_is_removed_on_shutdown(fake, upload_files):
    client = TestClient(create_app(fake, ServerConfig()))
    with client:
        open_one(client, upload_files)
        root = client.app.state.uploads["root"]
        assert root.is_dir() and not any(root.iterdir())  # each upload cleans up after itself
    assert not root.exists()


@pytest.fixture
def small_phantoms(monkeypatch):
    """``serve --phantoms`` writing small phantoms (quick)."""
    import petloop.phantom

    real = petloop.phantom.write_phantoms

    def small(config, out, n, **kw):
        return real(replace(config, shape=(24, 24, 32), spacing=(8.0, 8.0, 12.0)), out, n, **kw)

    monkeypatch.setattr(petloop.phantom, "write_phantoms", small)


@pytest.mark.parametrize("when", ["generating", "serving"])
def test_serve_removes_its_phantoms_when_interrupted(tmp_path, monkeypatch, small_phantoms,
                                                     when):
    import uvicorn
    from typer.testing import CliRunner

    import petloop.phantom
    from petloop.cli import app

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    if when == "generating":
        written = petloop.phantom.write_phantoms

        def interrupted(config, out, n, **kw):
            written(config, out, 1, **kw)
            raise KeyboardInterrupt

        monkeypatch.setattr(petloop.phantom, "write_phantoms", interrupted)
    seen = []

    def fake_run(asgi, **kw):
        seen.extend(tmp_path.glob("petloop-viewer-*/phantoms/*"))
        raise KeyboardInterrupt

    monkeypatch.setattr(uvicorn, "run", fake_run)
    r = CliRunner().invoke(app, ["serve", "--phantoms", "2", "--models", str(MODELS)])
    assert r.exit_code != 0
    assert bool(seen) == (when == "serving")
    assert not list(tmp_path.glob("petloop-viewer-*")), list(tmp_path.iterdir())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32",
                    reason="POSIX signals")
def test_sigterm_removes_the_phantom_folder(tmp_path):
    """``petloop serve --phantoms`` stopped by SIGTERM while it serves (uvicorn shuts down,
    then the signal ends the command) leaves no temporary folder."""
    port = _free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "petloop", "serve", "--phantoms", "1", "--port", str(port),
         "--models", str(MODELS)], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/cases", timeout=5) as r:
                    assert len(r.read()) > 2
                break
            except OSError:
                time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode()
        assert list(tmp_path.glob("petloop-viewer-*/phantoms"))
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert not list(tmp_path.glob("petloop-*")), list(tmp_path.iterdir())


def test_the_schema_documents_the_refusals(serve):
    paths = serve().get("/openapi.json").json()["paths"]
    for path in ("/api/sessions", "/api/sessions/upload"):
        assert {"413", "422", "503"} <= set(paths[path]["post"]["responses"])
    for path, method in (("/api/sessions/{session_id}/clicks", "post"),
                         ("/api/sessions/{session_id}/clicks/{index}", "delete"),
                         ("/api/sessions/{session_id}/undo", "post"),
                         ("/api/sessions/{session_id}/reset", "post")):
        assert {"404", "429"} <= set(paths[path][method]["responses"])
