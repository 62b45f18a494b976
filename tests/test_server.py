"""The viewer's REST API (FastAPI's test client), its sessions and wire formats."""

from __future__ import annotations

import csv
import gzip
import io
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from petloop.clicks.clicklist import ClickError, ClickList, NoSuchClick
from petloop.inference.modelset import load_model_set
from petloop.inference.pipeline import Pipeline, TTAChoice
from petloop.io.layouts import find_cases
from petloop.io.volume import Volume, read_volume, write_volume
from petloop.server.app import ServerConfig, create_app
from petloop.server.sessions import (
    SessionNotFound,
    SessionStore,
    ViewerSession,
    add_click,
    pack_mask,
    pack_volume,
    remove_click,
    unpack_mask,
)


def slow_pack(mask: np.ndarray) -> bytes:
    """The documented layout spelt out: bit n is voxel (i, j, k) with n = i + ni (j + nj k)."""
    ni, nj, nk = mask.shape
    out = bytearray((ni * nj * nk + 7) // 8)
    for k in range(nk):
        for j in range(nj):
            for i in range(ni):
                if mask[i, j, k]:
                    n = i + ni * (j + nj * k)
                    out[n // 8] |= 1 << (n % 8)
    return bytes(out)


def test_mask_bits_match_the_documented_layout():
    rng = np.random.default_rng(3)
    mask = rng.random((7, 5, 3)) > 0.6
    vol = Volume(mask.astype(np.uint8), (2.0, 2.0, 3.0))
    packed = pack_mask(vol)
    assert gzip.decompress(packed) == slow_pack(mask)
    assert np.array_equal(unpack_mask(packed, mask.shape), mask)
    data = np.frombuffer(gzip.decompress(pack_volume(vol.with_array(
        np.arange(105, dtype=np.float32).reshape(7, 5, 3)), "<f4")), "<f4")
    assert (data[1], data[7], data[35]) == (15, 3, 1)  # one step of i, j and k


# sessions without a network ---------------------------------------------------------------------
class FakeInner:
    """Stands in for the inference session: the mask marks the clicked voxels."""

    def __init__(self, shape=(6, 5, 4), delay=0.0):
        self.pet = Volume(np.ones(shape, np.float32), (2.0, 2.0, 2.0))
        self.ct = self.pet
        self.clicks = ClickList()
        self.delay = delay
        self.tracer = SimpleNamespace(tracer="fdg", probability=1.0)
        self.seen = []

    def set_case(self, *args, **kwargs):
        pass

    def change(self, new, time_budget=None):
        new.clicks.check_inside(self.pet.shape, "click")
        time.sleep(self.delay)
        mask = np.zeros(self.pet.shape, np.uint8)
        for p in new.clicks.tumor:
            mask[p] = 1
        self.seen.append(new.clicks)
        self.clicks = new
        return SimpleNamespace(mask=self.pet.with_array(mask), model="m", seconds={"total": 0.0},
                               tta=TTAChoice(0.0, None, ()), clicks=new,
                               changed=tuple((0, n) for n in self.pet.shape))

    def close(self, wait=True):
        pass


def test_clicks_are_applied_in_arrival_order():
    inner = FakeInner(shape=(12, 5, 4), delay=0.01)
    s = ViewerSession("id", "case", inner, threading.Lock())
    tickets = [s.ticket() for _ in range(6)]
    threads = [threading.Thread(target=s.apply, args=(t, add_click("tumor", (2 * t, 0, 0))))
               for t in reversed(tickets)]  # started in the opposite order
    for th in threads:
        th.start()
        time.sleep(0.005)
    for th in threads:
        th.join(10)
    assert [c.point[0] // 2 for c in s.snapshot.clicks] == tickets
    assert [len(c.tumor) for c in inner.seen] == [1, 2, 3, 4, 5, 6]
    assert s.snapshot.version == 5 and s.snapshot.report.count == 6


def test_a_failed_change_keeps_the_state_and_passes_the_turn():
    s = ViewerSession("id", "case", FakeInner(), threading.Lock())
    s.apply(s.ticket(), add_click("tumor", (1, 1, 1)))
    with pytest.raises(ValueError, match="outside the image"):
        s.apply(s.ticket(), add_click("tumor", (9, 1, 1)))
    with pytest.raises(NoSuchClick, match="no click 3"):
        s.apply(s.ticket(), remove_click(3))
    snap = s.apply(s.ticket(), add_click("background", (0, 0, 0)))
    assert [c.kind for c in snap.clicks] == ["tumor", "background"]
    assert s.inner.clicks.items == snap.clicks  # the clicks are the inner session's
    with pytest.raises(ClickError, match="'tumor' or 'background'"):
        add_click("lesion", (0, 0, 0))


def test_sessions_expire_and_ids_are_unguessable(monkeypatch):
    now = [0.0]
    store = SessionStore(pipeline=None, ttl_seconds=60, max_sessions=2, clock=lambda: now[0])
    monkeypatch.setattr("petloop.server.sessions.Session", lambda pipeline: FakeInner())
    vol = FakeInner().pet
    a = store.create("a", vol, vol)
    b = store.create("b", vol, vol)
    assert len(a.id) >= 32 and a.id != b.id
    with pytest.raises(RuntimeError, match="2 sessions are open"):
        store.create("c", vol, vol)
    now[0] = 50
    store.get(a.id)  # a request keeps a session alive
    now[0] = 100
    assert store.sweep() == [b.id]
    with pytest.raises(SessionNotFound):
        store.get(b.id)
    assert store.get(a.id).case == "a"


# the API -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(work):
    return work[0] / "phantoms"


@pytest.fixture(scope="module")
def client(model_set, data):
    app = create_app(Pipeline(load_model_set(model_set)),
                     ServerConfig(data=data, max_upload_mb=2.0))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def case_name(data):
    return next(c.case_id for c in find_cases(data) if c.load().label.array.any())


def test_health_cases_and_schema(client, data):
    assert client.get("/api/health").json()["status"] == "ok"
    names = [c["name"] for c in client.get("/api/cases").json()]
    assert names == [c.case_id for c in find_cases(data)]
    schema = client.get("/openapi.json").json()
    for path in ("/api/sessions", "/api/sessions/{session_id}/clicks",
                 "/api/sessions/{session_id}/mask", "/api/sessions/{session_id}/report",
                 "/api/sessions/upload"):
        assert path in schema["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "viewer.js" in page.text
    assert client.get("/static/viewer.js").status_code == 200


def test_a_session_from_a_case_with_clicks(client, data, case_name):
    case = next(c for c in find_cases(data) if c.case_id == case_name).load()
    r = client.post("/api/sessions", json={"case": case_name})
    assert r.status_code == 201, r.text
    s = r.json()
    sid, shape = s["id"], tuple(s["shape"])
    assert shape == case.pet.shape and s["version"] == 0 and s["clicks"] == []
    assert s["model"] == "fdg_v4" or s["tracer"] == "psma"

    got = client.get(f"/api/sessions/{sid}/volume/pet")
    scale = float(got.headers["X-Scale"])
    pet = np.frombuffer(gzip.decompress(got.content), "<u2").reshape(shape[::-1]).transpose(2, 1, 0)
    assert scale == pytest.approx(case.pet.array.max() / 65535)
    assert np.abs(pet * scale - np.maximum(case.pet.array, 0)).max() <= scale / 2 + 1e-6
    ct = np.frombuffer(gzip.decompress(client.get(f"/api/sessions/{sid}/volume/ct").content),
                       "<i2").reshape(shape[::-1]).transpose(2, 1, 0)
    assert np.abs(ct - np.round(case.ct.array)).max() == 0

    lesion = tuple(int(v) for v in np.argwhere(case.label.array)[0])
    r = client.post(f"/api/sessions/{sid}/clicks", json={"kind": "tumor", "point": lesion})
    assert r.status_code == 200, r.text
    s1 = r.json()
    assert s1["version"] == 1 and s1["clicks"] == [{"index": 0, "kind": "tumor",
                                                     "point": list(lesion), "stroke": 0}]
    m = client.get(f"/api/sessions/{sid}/mask")
    assert m.headers["x-mask-version"] == "1"
    mask = unpack_mask(m.content, shape)
    store = client.app.state.store
    assert np.array_equal(mask, store.get(sid).snapshot.mask.array != 0)

    for _ in range(5):  # the sixth background click routes FDG to the full-guidance model
        r = client.post(f"/api/sessions/{sid}/clicks", json={"kind": "background",
                                                             "point": [0, 0, 0]})
    s6 = r.json()
    assert len(s6["clicks"]) == 6
    if s6["tracer"] == "fdg":
        assert s6["model"] == "fdg_v3"
    bad = client.post(f"/api/sessions/{sid}/clicks",
                      json={"kind": "tumor", "point": [shape[0], 0, 0]})
    assert bad.status_code == 422 and "outside the image" in bad.json()["detail"]
    assert client.get(f"/api/sessions/{sid}").json()["version"] == 6  # unchanged

    r = client.delete(f"/api/sessions/{sid}/clicks/0")
    assert [c["kind"] for c in r.json()["clicks"]] == ["background"] * 5
    missing = client.delete(f"/api/sessions/{sid}/clicks/9")
    assert missing.status_code == 404 and "no click 9: there are 5" in missing.json()["detail"]
    restored = client.post(f"/api/sessions/{sid}/undo").json()["clicks"]  # the removal undone
    assert len(restored) == 6 and restored[0]["kind"] == "tumor"
    assert len(client.post(f"/api/sessions/{sid}/undo").json()["clicks"]) == 5
    s = client.post(f"/api/sessions/{sid}/reset").json()
    assert s["clicks"] == [] and s["model"] in ("fdg_v4", "psma_v2")

    rep = client.get(f"/api/sessions/{sid}/report").json()
    assert rep["lesion_count"] == len(rep["lesions"]) == s["report"]["lesion_count"]
    rows = list(csv.reader(io.StringIO(client.get(f"/api/sessions/{sid}/report.csv").text)))
    assert rows[0][0] == "lesion" and len(rows) == 1 + rep["lesion_count"]
    nii = client.get(f"/api/sessions/{sid}/mask.nii.gz")
    assert "attachment" in nii.headers["content-disposition"]
    path = data.parent / "export_mask.nii.gz"
    path.write_bytes(nii.content)
    exported = read_volume(path)
    assert exported.same_grid(case.pet)
    assert np.array_equal(exported.array != 0, store.get(sid).snapshot.mask.array != 0)

    assert client.delete(f"/api/sessions/{sid}").status_code == 204
    assert client.get(f"/api/sessions/{sid}").status_code == 404
    assert client.delete(f"/api/sessions/{sid}").status_code == 404


def test_strokes_through_the_api(client, case_name):
    from petloop.clicks.scribbles import stroke_voxels
    from petloop.server.sessions import add_stroke

    sid = client.post("/api/sessions", json={"case": case_name}).json()["id"]
    path = [[10, 20, 30], [16, 23, 30], [16, 28, 30]]
    r = client.post(f"/api/sessions/{sid}/strokes", json={"kind": "tumor", "points": path})
    assert r.status_code == 200, r.text
    s = r.json()
    voxels = stroke_voxels(path)
    assert [tuple(c["point"]) for c in s["clicks"]] == list(voxels)
    assert {c["stroke"] for c in s["clicks"]} == {1} and s["version"] == 1
    r = client.post(f"/api/sessions/{sid}/strokes", json={"kind": "background",
                                                           "points": [[1, 1, 1], [1, 4, 1]]})
    assert [c["stroke"] for c in r.json()["clicks"]].count(2) == 4
    r = client.delete(f"/api/sessions/{sid}/strokes/1")
    assert {c["stroke"] for c in r.json()["clicks"]} == {2}
    assert client.delete(f"/api/sessions/{sid}/strokes/1").status_code == 404
    back = client.post(f"/api/sessions/{sid}/undo").json()["clicks"]
    assert len(back) == len(voxels) + 4
    shape = client.get(f"/api/sessions/{sid}").json()["shape"]
    out = client.post(f"/api/sessions/{sid}/strokes",
                      json={"kind": "tumor", "points": [[0, 0, 0], [shape[0], 0, 0]]})
    assert out.status_code == 422 and "outside the image" in out.json()["detail"]
    many = client.post(f"/api/sessions/{sid}/strokes",
                       json={"kind": "tumor", "points": [[0, 0, 0]] * 2049})
    assert many.status_code == 422
    long = client.post(f"/api/sessions/{sid}/strokes",
                       json={"kind": "tumor", "points": [[0, 0, 0], [5000, 0, 0]]})
    assert long.status_code == 422 and "at most 4096" in long.json()["detail"]
    assert client.get(f"/api/sessions/{sid}").json()["version"] == 4  # nothing applied
    with pytest.raises(ClickError, match="'tumor' or 'background'"):
        add_stroke("lesion", [(0, 0, 0)])
    client.delete(f"/api/sessions/{sid}")

def test_case_names_never_become_paths(client):
    for name in ("../../etc/passwd", "/etc/passwd", "..", "phantoms/../x"):
        r = client.post("/api/sessions", json={"case": name})
        assert r.status_code == 404 and "no case" in r.json()["detail"]
    assert client.get("/api/sessions/not-a-session/mask").status_code == 404


def test_uploads_are_checked_and_capped(client, data, case_name, tmp_path):
    files = next(c for c in find_cases(data) if c.case_id == case_name)
    ct, pet = files.ct.read_bytes(), files.pet.read_bytes()
    r = client.post("/api/sessions/upload", data={"tracer": "fdg"},
                    files={"ct": ("ct.nii.gz", ct), "pet": ("my_pet.nii.gz", pet)})
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["case"] == "upload:my_pet" and s["tracer"] == "fdg" and s["model"] == "fdg_v4"
    r = client.post("/api/sessions/upload",
                    files={"ct": ("ct.png", ct), "pet": ("pet.nii.gz", pet)})
    assert r.status_code == 422 and "CT upload 'ct.png'" in r.json()["detail"]
    r = client.post("/api/sessions/upload",
                    files={"ct": ("ct.nii.gz", b"not an image"), "pet": ("pet.nii.gz", pet)})
    assert r.status_code == 422 and "cannot read" in r.json()["detail"]
    big = b"\0" * (3 * 2**20)
    r = client.post("/api/sessions/upload",
                    files={"ct": ("ct.nii.gz", big), "pet": ("pet.nii.gz", pet)})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.post("/api/sessions", content=b"{" + b" " * 100_000 + b"}",
                    headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_reads_go_on_while_inference_runs(client, case_name):
    sid = client.post("/api/sessions", json={"case": case_name}).json()["id"]
    store = client.app.state.store
    answers = []
    with store.infer_lock:  # as if another session's inference were running
        th = threading.Thread(target=lambda: answers.extend(
            [client.get(f"/api/sessions/{sid}/mask").status_code,
             client.get(f"/api/sessions/{sid}/report").status_code,
             client.get(f"/api/sessions/{sid}").status_code]))
        th.start()
        th.join(20)
        assert answers == [200, 200, 200]
    client.delete(f"/api/sessions/{sid}")


def test_serve_refuses_a_missing_model_set(tmp_path):
    from typer.testing import CliRunner

    from petloop.cli import app

    r = CliRunner().invoke(app, ["serve", "--models", str(tmp_path / "none")])
    assert r.exit_code == 2 and "manifest" in r.output


def test_an_upload_of_mha_files(client, data, case_name, tmp_path):
    case = next(c for c in find_cases(data) if c.case_id == case_name).load()
    ct = write_volume(case.ct, tmp_path / "ct.mha")
    pet = write_volume(case.pet, tmp_path / "pet.mha")
    r = client.post("/api/sessions/upload", data={"tracer": "psma"},
                    files={"ct": ("ct.mha", ct.read_bytes()), "pet": ("pet.mha", pet.read_bytes())})
    assert r.status_code == 201, r.text
    assert r.json()["model"] == "psma_v2"


def test_serve_offers_generated_phantoms(model_set, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from petloop.cli import app

    seen = {}

    def fake_run(asgi, host, port, log_level):
        seen["host"], seen["port"] = host, port
        with TestClient(asgi) as c:
            seen["cases"] = c.get("/api/cases").json()

    monkeypatch.setattr(uvicorn, "run", fake_run)
    r = CliRunner().invoke(app, ["serve", "--models", str(model_set), "--phantoms", "2",
                                 "--port", "8123"])
    assert r.exit_code == 0, r.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert len(seen["cases"]) == 2 and {c["tracer"] for c in seen["cases"]} <= {"fdg", "psma"}


def test_a_thin_upload_is_refused_before_inference(client, tmp_path):
    pet = Volume(np.full((1294, 1, 1), 1.5, np.float32), (4.0, 4.0, 6.0))
    ct = write_volume(pet.with_array(np.zeros(pet.shape, np.float32)), tmp_path / "ct.nii.gz")
    pet = write_volume(pet, tmp_path / "pet.nii.gz")
    r = client.post("/api/sessions/upload",
                    files={"ct": ("ct.nii.gz", ct.read_bytes()),
                           "pet": ("pet.nii.gz", pet.read_bytes())})
    assert r.status_code == 422 and "at least 8" in r.json()["detail"], r.text
    assert str(tmp_path) not in r.text


def test_a_deleted_session_leaves_nothing_behind(client, case_name):
    """With the real pipeline: no cache of the models keeps a session's arrays."""
    import gc
    import weakref

    sid = client.post("/api/sessions", json={"case": case_name}).json()["id"]
    assert client.post(f"/api/sessions/{sid}/clicks",
                       json={"kind": "background", "point": [0, 0, 0]}).status_code == 200
    assert client.get(f"/api/sessions/{sid}/volume/ct").status_code == 200
    s = client.app.state.store.get(sid)
    engine = s.inner._engine
    kept = [s, s.inner, engine, s.pet.array, s.ct.array, s.snapshot.mask.array,
            *(p.data for p in engine._shared.values()),
            *(m.mask for m in engine._states.values())]
    refs = [weakref.ref(o) for o in kept]
    del s, engine, kept
    assert client.delete(f"/api/sessions/{sid}").status_code == 204
    gc.collect()
    assert [r() is None for r in refs] == [True] * len(refs)


def test_a_session_opens_before_its_first_mask_and_masks_come_as_changed_boxes(client, data,
                                                                               case_name):
    r = client.post("/api/sessions", json={"case": case_name, "wait": False})
    assert r.status_code == 201, r.text
    s = r.json()
    sid, shape = s["id"], tuple(s["shape"])
    assert s["version"] in (-1, 0) and s["error"] is None  # -1: the first mask is on its way
    if s["version"] == -1:
        assert s["model"] is None and s["report"] is None and s["clicks"] == []
    click = client.post(f"/api/sessions/{sid}/clicks",  # queued behind the first mask
                        json={"kind": "background", "point": [1, 1, 1]})
    assert click.status_code == 200 and click.json()["version"] == 1
    whole = client.get(f"/api/sessions/{sid}/mask")
    assert whole.headers["X-Box"] == ",".join(f"0,{n}" for n in shape)
    full = unpack_mask(whole.content, shape)
    for since in (0, -1, 1):
        part = client.get(f"/api/sessions/{sid}/mask", params={"since": since})
        assert part.headers["X-Mask-Version"] == "1"
        if since == 1:  # the client is up to date
            assert part.headers["X-Box"] == "none" and gzip.decompress(part.content) == b""
            continue
        i0, i1, j0, j1, k0, k1 = map(int, part.headers["X-Box"].split(","))
        box = unpack_mask(part.content, (i1 - i0, j1 - j0, k1 - k0))
        assert np.array_equal(box, full[i0:i1, j0:j1, k0:k1])
        if since == 0:  # the tiles a corner click reaches start at the corner
            assert (i0, j0, k0) == (0, 0, 0)
    assert client.get(f"/api/sessions/{sid}/mask", params={"since": -5}).status_code == 422
    assert client.delete(f"/api/sessions/{sid}").status_code == 204
