"""MONAI Label's REST protocol, the part 3D Slicer's MONAI Label module, OHIF's MONAI Label
mode and ``monailabel.client.MONAILabelClient`` use, answered with petloop's models.

``petloop serve`` mounts it beside the viewer's API (``docs/monailabel.md`` has the mapping and
a walkthrough):

* ``GET /info/``: the app (``name``, ``labels: ["lesion"]``) and one interactive model, the
  model set, of type ``deepedit``, dimension 3. No top-level ``config``: the Slicer module takes
  a server that sends one for an outdated one.
* ``GET /auth/``: auth is disabled (the server listens on loopback unless told otherwise).
* ``GET /datastore/?output=all``: the cases under ``--data``; an image id is a case name.
* ``GET /datastore/image?image=ID``: the image to display, the PET in SUV (``modality=ct``:
  the CT), as NIfTI on the PET's grid.
* ``PUT /session/``, ``GET /session/{id}``, ``DELETE /session/{id}``: an uploaded image. A
  session holds a PET and a CT: one PUT may carry both (a file whose name holds ``ct`` is the
  CT, one whose name holds ``pet``, ``suv`` or ``pt`` the PET), or a second PUT with
  ``session_id`` adds the other. A session with the PET alone is kept, and inference on it is
  refused with a message saying the CT is missing: petloop's models read both.
* ``POST /infer/{model}?image=ID`` (or ``&session_id=SID``): the form field ``params`` carries
  every click so far, ``foreground`` and ``background`` as voxel indices in the image's IJK
  order (petloop's ``[i, j, k]``); the answer is MONAI Label's multipart form, a ``params`` part
  (label names, latencies, the model that answered) and the label as NIfTI on the image's grid.
  Each image keeps a petloop session (the prediction engine's cache), so the second click on an
  image costs a click, not a prediction.

Safety as for the viewer: ids are looked up, never joined to paths; uploads are capped and read
with the server's limits; errors are ``{"detail": ...}`` with their status codes.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from petloop.io.clicks import Clicks
from petloop.io.volume import SUFFIXES as VOLUME_SUFFIXES
from petloop.io.volume import Volume, VolumeError, read_volume, resample_to

from .files import download_name, nifti_bytes

LABEL = "lesion"
_ERR = {"description": "the problem, as {\"detail\": ...}"}
NOT_FOUND = {404: {**_ERR, "description": "no such image, session or model"}}
UNFIT = {422: {**_ERR, "description": "unfit input: clicks, params, an image"}}
#: images whose petloop session (engine caches) is kept between infer calls
KEPT_IMAGES = 2
#: uploaded sessions kept at once, and how long one lives without a request (s)
MAX_UPLOADS = 4
UPLOAD_TTL = 3600.0


def _role(filename: str) -> str | None:
    """``ct`` or ``pet`` from an uploaded file's name (None: neither is named)."""
    stem = Path(filename.replace("\\", "/")).name.lower()
    pet = any(word in stem for word in ("pet", "suv")) or stem.startswith("pt")
    ct = "ct" in stem.replace("pet", "").replace("suv", "")
    if pet != ct:
        return "pet" if pet else "ct"
    return None


class _Upload:
    def __init__(self, name: str):
        self.name = name
        self.images: dict[str, Volume] = {}
        self.touched = time.monotonic()

    def info(self, sid: str) -> dict:
        missing = [r for r in ("pet", "ct") if r not in self.images]
        return {"session_id": sid, "session_info": {
            "name": self.name, "images": sorted(self.images), "missing": missing,
            "ready": not missing,
            "shape": list(self.images["pet"].shape) if "pet" in self.images else None}}


def add_monailabel_routes(app: FastAPI, *, pipeline, config, cases: Callable[[], dict],
                          reading, inference, public: Callable[[Exception], str],
                          bad_input: tuple) -> None:
    """Mount the protocol on ``app`` (see the module text). ``cases`` lists the data folder's
    cases; ``reading`` and ``inference`` are the server's limiters."""
    from petloop.inference.pipeline import Session

    name = pipeline.model_set.name
    kept: OrderedDict[str, tuple[Session, threading.Lock]] = OrderedDict()
    kept_lock = threading.Lock()
    uploads: dict[str, _Upload] = {}
    uploads_lock = threading.Lock()

    def upload_or_404(sid: str) -> _Upload:
        with uploads_lock:
            now = time.monotonic()
            for old in [k for k, u in uploads.items() if now - u.touched > UPLOAD_TTL]:
                del uploads[old]
            up = uploads.get(sid)
            if up is None:
                raise HTTPException(404, f"no session {sid!r} (it may have expired)")
            up.touched = now
            return up

    def images_of(image: str, session_id: str | None) -> tuple[Volume, Volume, str]:
        """The CT, PET and tracer (``auto``, or the case's where the set has no tracer
        classifier, as the viewer does) of a case or an uploaded session (blocking)."""
        if session_id:
            up = upload_or_404(session_id)
            if "ct" not in up.images:
                raise HTTPException(422, f"session {session_id!r} holds no CT: petloop's models "
                                    "read the CT and the PET; add the CT with PUT /session/ and "
                                    f"session_id={session_id}")
            if "pet" not in up.images:
                raise HTTPException(422, f"session {session_id!r} holds no PET")
            return up.images["ct"], up.images["pet"], "auto"
        files = cases().get(image)
        if files is None:
            raise HTTPException(404, f"no image {image!r} in the datastore")
        case = files.load(with_label=False, limits=config.read_limits)
        tracer = "auto"
        if case.tracer in ("fdg", "psma") and pipeline.model_set.tracer_classifier is None:
            tracer = case.tracer
        return case.ct, case.pet, tracer

    def close(entries) -> None:
        """Close kept sessions, each once a step running on it is done."""
        for session, lock in entries:
            with lock:
                session.close()

    def forget(key: str) -> None:
        with kept_lock:
            entry = kept.pop(key, None)
        close([entry] if entry else [])

    def session_for(key: str, image: str, session_id: str | None
                    ) -> tuple[Session, threading.Lock]:
        """The kept session of an image, set up (outside the cache's lock) where there is
        none; the least recently used beyond :data:`KEPT_IMAGES` are closed."""
        with kept_lock:
            if key in kept:
                kept.move_to_end(key)
                return kept[key]
        ct, pet, tracer = images_of(image, session_id)
        session = Session(pipeline)
        session.set_case(ct, pet, tracer)
        entry, evicted = (session, threading.Lock()), []
        with kept_lock:
            if key in kept:  # set up meanwhile by another request: ours goes
                entry, evicted = kept[key], [entry]
            else:
                kept[key] = entry
                while len(kept) > KEPT_IMAGES:
                    evicted.append(kept.popitem(last=False)[1])
        close(evicted)
        return entry

    @app.get("/info/", tags=["monailabel"])
    def info():
        return {"name": "petloop", "description": f"petloop lesion segmentation in PET/CT "
                f"with the model set {name!r}", "version": "1", "labels": [LABEL],
                "models": {name: {"type": "deepedit", "dimension": 3,
                                  "labels": {LABEL: 1}, "description": "click-guided lesion "
                                  "segmentation (foreground: lesion, background: not lesion)",
                                  "config": {}}},
                "trainers": {}, "strategies": {}, "scoring": {}, "train_stats": {},
                "datastore": {"total": len(cases()), "completed": 0}}

    @app.get("/auth/", tags=["monailabel"])
    def auth():
        return {"enabled": False, "client_id": "", "realm": "", "uri": ""}

    @app.get("/datastore/", tags=["monailabel"])
    def datastore(output: str = "stats"):
        found = cases()
        if output != "all":
            return {"total": len(found), "completed": 0, "label_tags": {}, "train": []}
        return {"name": "petloop", "description": "cases under --data",
                "objects": {k: {"image": {"ext": ".nii.gz", "info": {"name": k,
                                                                     "tracer": f.tracer}},
                                "labels": {}} for k, f in found.items()}}

    @app.get("/datastore/image", tags=["monailabel"], response_class=Response,
             responses={200: {"content": {"application/octet-stream": {}},
                              "description": "the image as NIfTI (.nii.gz)"},
                        **NOT_FOUND, **UNFIT})
    async def datastore_image(image: str, modality: str = "pet"):
        if modality not in ("pet", "ct"):
            raise HTTPException(422, f"modality {modality!r}: pet or ct")

        def load() -> bytes:
            ct, pet, _ = images_of(image, None)
            vol = pet if modality == "pet" else resample_to(ct, pet, default_value=-1024.0)
            return nifti_bytes(vol)

        try:
            data = await anyio.to_thread.run_sync(load, limiter=reading)
        except bad_input as exc:
            raise HTTPException(422, public(exc)) from None
        return Response(data, media_type="application/octet-stream", headers={
            "Content-Disposition":
                f'attachment; filename="{download_name(image, "image")}.nii.gz"'})

    @app.put("/session/", tags=["monailabel"],
             responses={**NOT_FOUND, **UNFIT, 413: {"description": "the upload is too large"},
                        503: {"description": "too many upload sessions"}})
    async def create_session(request: Request):
        form = await request.form()
        files = [v for v in form.getlist("files") if isinstance(v, UploadFile)]
        try:
            params = json.loads(form.get("params") or "{}")
        except json.JSONDecodeError:
            raise HTTPException(422, "params: not JSON") from None
        sid = str(form.get("session_id") or (params.get("session_id") if isinstance(
            params, dict) else "") or "")
        if not files or len(files) > 2:
            raise HTTPException(422, "upload one or two images (files): the PET, the CT, or "
                                "both")
        total = 0
        for up in files:
            up.file.seek(0, 2)
            total += up.file.tell()
            up.file.seek(0)
        if total > config.max_upload_mb * 2**20:
            raise HTTPException(413, f"the upload is larger than {config.max_upload_mb:g} MB")
        roles = []
        for up in files:
            filename = (up.filename or "")[:200]
            if not any(filename.lower().endswith(s) for s in VOLUME_SUFFIXES):
                raise HTTPException(422, f"upload {filename!r}: use a .nii.gz, .nii or .mha "
                                    "file")
            role = _role(filename) or ("pet" if len(files) == 1 and not sid else None)
            if role is None:
                raise HTTPException(422, f"upload {filename!r}: name the file so it says "
                                    "which image it is ('ct' for the CT, 'pet' or 'suv' for "
                                    "the PET)")
            roles.append(role)
        if len(set(roles)) != len(roles):
            raise HTTPException(422, "the two uploads are both the " + roles[0].upper())

        def read() -> dict[str, Volume]:
            out = {}
            tmp = Path(tempfile.mkdtemp(prefix="petloop-ml-upload-"))
            try:
                for role, up in zip(roles, files, strict=True):
                    suffix = next(s for s in VOLUME_SUFFIXES
                                  if (up.filename or "").lower().endswith(s))
                    path = tmp / f"{role}{suffix}"
                    with path.open("wb") as fh:
                        shutil.copyfileobj(up.file, fh, 1 << 20)
                    out[role] = read_volume(path, limits=config.read_limits,
                                            allow_data_file=False,
                                            name=f"{role.upper()} upload {up.filename!r}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return out

        try:
            images = await anyio.to_thread.run_sync(read, limiter=reading)
        except VolumeError as exc:
            raise HTTPException(413 if type(exc).__name__ == "VolumeTooLarge" else 422,
                                public(exc)) from None
        if sid:
            up = upload_or_404(sid)
        else:
            with uploads_lock:
                if len(uploads) >= MAX_UPLOADS:
                    raise HTTPException(503, "too many upload sessions; remove one first",
                                        headers={"Retry-After": "60"})
                sid = secrets.token_urlsafe(24)
                up = uploads[sid] = _Upload(Path((files[0].filename or "upload").replace(
                    "\\", "/")).name[:100])
        up.images.update(images)
        forget(f"session:{sid}")  # an image changed: its kept session is stale
        return up.info(sid)

    @app.get("/session/{session_id}", tags=["monailabel"], responses=NOT_FOUND)
    def get_session(session_id: str):
        return upload_or_404(session_id).info(session_id)

    @app.delete("/session/{session_id}", tags=["monailabel"], responses=NOT_FOUND)
    def remove_session(session_id: str):
        upload_or_404(session_id)
        with uploads_lock:
            uploads.pop(session_id, None)
        forget(f"session:{session_id}")
        return {"session_id": session_id, "removed": True}

    @app.post("/infer/{model}", tags=["monailabel"], response_class=Response,
              responses={200: {"content": {"multipart/form-data": {}},
                               "description": "a params part (JSON) and the label (NIfTI)"},
                         **NOT_FOUND, **UNFIT,
                         503: {"description": "busy with other images: try again"}})
    async def infer(model: str, request: Request, image: str = "",
                    session_id: str | None = None):
        if model != name:
            raise HTTPException(404, f"no model {model!r}; this server has {name!r}")
        form = await request.form()
        try:
            params = json.loads(form.get("params") or "{}")
        except json.JSONDecodeError:
            raise HTTPException(422, "params: not JSON") from None
        if not isinstance(params, dict):
            raise HTTPException(422, "params: a JSON object")
        points = {}
        for kind in ("foreground", "background"):
            raw = params.get(kind) or []
            try:
                if not isinstance(raw, list) or any(
                        not isinstance(p, list) or len(p) != 3
                        or not all(isinstance(v, int) and not isinstance(v, bool) for v in p)
                        for p in raw):
                    raise ValueError
                pts = tuple(tuple(p) for p in raw)
            except (TypeError, ValueError):
                raise HTTPException(422, f"params.{kind}: a list of [i, j, k] voxel "
                                    "indices") from None
            points[kind] = pts
        label = params.get("label", LABEL)
        if label not in (LABEL, None, ""):
            raise HTTPException(422, f"params.label {label!r}: this model segments {LABEL!r}")
        if not image and not session_id:
            raise HTTPException(422, "give the image (image=ID) or the session (session_id)")

        def run():
            t0 = time.perf_counter()
            if session_id:
                upload_or_404(session_id)  # still there (and its time renewed)
            key = f"session:{session_id}" if session_id else f"case:{image}"
            clicks = Clicks(points["foreground"], points["background"])
            for _ in range(2):  # a session closed by eviction before its turn: set up again
                session, lock = session_for(key, image, session_id)
                t1 = time.perf_counter()
                with lock:
                    if not session.ready:
                        continue
                    clicks.check_inside(session.pet.shape, "click")
                    result = session.set_clicks(clicks)
                    break
            else:
                raise HTTPException(503, "the server is busy with other images; try again",
                                    headers={"Retry-After": "5"})
            t2 = time.perf_counter()
            data = nifti_bytes(result.mask)
            return result, data, {"pre": t1 - t0, "infer": t2 - t1,
                                  "post": time.perf_counter() - t2}

        try:
            result, data, seconds = await anyio.to_thread.run_sync(run, limiter=inference)
        except bad_input as exc:
            raise HTTPException(422, public(exc)) from None
        body = {"label_names": {LABEL: 1}, "model": result.model,
                "tracer": result.tracer.tracer, "clicks": len(result.clicks),
                "latencies": {**{k: round(v, 4) for k, v in seconds.items()},
                              "total": round(sum(seconds.values()), 4)}}
        label_name = download_name(image or session_id, "image")
        return _multipart(body, data, f"{label_name}_label.nii.gz")


def _multipart(params: dict, label: bytes, filename: str) -> Response:
    """MONAI Label's infer answer: a ``params`` part (JSON) and the label file."""
    boundary = secrets.token_hex(16)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n"
            f"{json.dumps(params)}\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f"name=\"image\"; filename=\"{filename}\"\r\nContent-Type: "
            "application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return Response(head + label + tail,
                    media_type=f"multipart/form-data; boundary={boundary}")


__all__ = ["KEPT_IMAGES", "LABEL", "add_monailabel_routes"]
