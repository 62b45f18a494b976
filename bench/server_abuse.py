"""The viewer's server under abuse, live on loopback: what it answers and what it costs.

Starts ``petloop serve --phantoms 2`` (bundled models) on a free loopback port, then:

1. uploads a MetaImage whose header points at /etc/passwd, a 1 KB NIfTI header declaring
   1000^3 float32, and a gzip bomb (1 GiB of zeros declared 1024^3), and prints each answer's
   status and the server's resident memory (and its peak) after each;
2. opens a session and sends 60 clicks at once while reading the session's state, mask and
   report in a loop: prints how the clicks were answered (200 applied, 429 queue full) and the
   reads' latency (median and worst) while the clicks were queued;
3. deletes the session and prints the memory before and after;
4. ends the server with SIGTERM and checks that its temporary folders are gone.

Every request goes to 127.0.0.1 only; every loop is bounded. Linux (reads /proc).

    .venv/bin/python bench/server_abuse.py
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def memory_mb(pid: int) -> tuple[float, float]:
    """Resident memory now and its peak, MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def call(base: str, method: str, path: str, body: bytes | None = None,
         headers: dict | None = None, timeout: float = 600) -> tuple[int, bytes]:
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def multipart(files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = []
    for field, (name, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                     f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                     .encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def nifti_header(shape) -> bytes:
    import nibabel as nib
    import numpy as np

    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    return header.binaryblock + bytes(4)


def hostile_uploads() -> dict[str, tuple[str, bytes]]:
    passwd = (b"ObjectType = Image\nNDims = 3\nBinaryData = True\nDimSize = 8 8 8\n"
              b"ElementType = MET_UCHAR\nElementDataFile = /etc/passwd\n")
    size_bomb = gzip.compress(nifti_header((1000, 1000, 1000)))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6) as fh:
        fh.write(nifti_header((1024, 1024, 1024)))
        zeros = bytes(1 << 24)
        for _ in range(64):  # 1 GiB of zeros
            fh.write(zeros)
    gz_bomb = buffer.getvalue()
    return {"ElementDataFile = /etc/passwd": ("pet.mha", passwd),
            "1 KB header declaring 1000^3 float32": ("pet.nii.gz", size_bomb),
            f"gzip bomb ({len(gz_bomb) / 2**20:.1f} MB, 1 GiB inflated)": ("pet.nii.gz", gz_bomb)}


def main() -> None:
    port = free_port()
    base = f"http://{HOST}:{port}"
    tmp_before = set(Path(tempfile.gettempdir()).glob("petloop-*"))
    server = subprocess.Popen([sys.executable, "-m", "petloop", "serve", "--phantoms", "2",
                               "--port", str(port), "--host", HOST],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            try:
                if call(base, "GET", "/api/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("the server did not start")
        print(f"server up: {memory_mb(server.pid)[0]:.0f} MB resident")

        ct = ("ct.nii.gz", gzip.compress(nifti_header((8, 8, 8)) + bytes(8 * 8 * 8 * 4)))
        for what, pet in hostile_uploads().items():
            body, headers = multipart({"ct": ct, "pet": pet})
            status, answer = call(base, "POST", "/api/sessions/upload", body, headers)
            rss, peak = memory_mb(server.pid)
            leak = b"root:" in answer
            print(f"{what}: {status}, {rss:.0f} MB resident (peak {peak:.0f} MB), file content "
                  f"in the answer: {'yes' if leak else 'no'}")

        case = json.loads(call(base, "GET", "/api/cases")[1])[0]["name"]
        status, answer = call(base, "POST", "/api/sessions",
                              json.dumps({"case": case}).encode(),
                              {"Content-Type": "application/json"})
        state = json.loads(answer)
        sid, shape = state["id"], state["shape"]
        print(f"session on {case}: {status}, {memory_mb(server.pid)[0]:.0f} MB resident")

        answers: list[int] = []
        done = threading.Event()

        def click(n: int) -> None:
            point = [(n * 7) % shape[0], (n * 5) % shape[1], (n * 3) % shape[2]]
            body = json.dumps({"kind": "background", "point": point}).encode()
            answers.append(call(base, "POST", f"/api/sessions/{sid}/clicks", body,
                                {"Content-Type": "application/json"})[0])

        threads = [threading.Thread(target=click, args=(n,)) for n in range(60)]
        for t in threads:
            t.start()
        reads: list[float] = []

        def reader() -> None:
            paths = [f"/api/sessions/{sid}", f"/api/sessions/{sid}/mask",
                     f"/api/sessions/{sid}/report"]
            while not done.is_set() and len(reads) < 300:
                t0 = time.perf_counter()
                call(base, "GET", paths[len(reads) % 3])
                reads.append(time.perf_counter() - t0)
                time.sleep(0.05)

        r = threading.Thread(target=reader)
        r.start()
        for t in threads:
            t.join()
        done.set()
        r.join()
        counts = {s: answers.count(s) for s in sorted(set(answers))}
        print(f"60 clicks at once: {counts}; {len(reads)} reads meanwhile, median "
              f"{statistics.median(reads) * 1000:.0f} ms, worst {max(reads) * 1000:.0f} ms")

        before = memory_mb(server.pid)[0]
        call(base, "DELETE", f"/api/sessions/{sid}")
        time.sleep(1.0)
        print(f"delete: {before:.0f} MB resident before, {memory_mb(server.pid)[0]:.0f} MB after")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = "killed"
    left = set(Path(tempfile.gettempdir()).glob("petloop-*")) - tmp_before
    print(f"SIGTERM: exit {code}; temporary folders left: {len(left)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
