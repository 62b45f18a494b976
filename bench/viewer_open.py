"""How fast the viewer opens a case of a real scan's size over loopback, in a real browser.

Writes one adult phantom on the autoPET grid (default 400 x 400 x 326 at 2.0364 x 2.0364 x 3 mm),
serves it with the model set (default the bundled one) on a free loopback port, opens it in
Debian's headless Chromium and prints, side by side: the time from Open to the images drawn
(the server answers once the case is set up; the first mask comes later), the bytes the page
received for the images, and, with ``--first-mask``, the time to the first mask.

    .venv/bin/python bench/viewer_open.py [--shape 400 400 326] [--first-mask]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[400, 400, 326])
    parser.add_argument("--spacing", type=float, nargs=3, default=[2.0364, 2.0364, 3.0])
    parser.add_argument("--models", default="petloop/models/phantom")
    parser.add_argument("--first-mask", action="store_true")
    args = parser.parse_args()

    import uvicorn
    from playwright.sync_api import sync_playwright

    from petloop.inference.modelset import load_model_set
    from petloop.inference.pipeline import Pipeline
    from petloop.phantom import PhantomConfig, write_phantoms
    from petloop.server.app import ServerConfig, create_app

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "phantoms"
        write_phantoms(PhantomConfig(seed=5, tracer="fdg", shape=tuple(args.shape),
                                     spacing=tuple(args.spacing), negative_fraction=0.0,
                                     lesions=(8, 12)), data, 1)
        app = create_app(Pipeline(load_model_set(args.models), device="cpu", precision="auto"),
                         ServerConfig(data=data))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        received = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("response", lambda r: received.__setitem__(
                r.url.rsplit("/", 1)[-1], int(r.headers.get("content-length", 0) or 0))
                if "/volume/" in r.url else None)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.querySelector('#case-select').value !== ''")
            t0 = time.perf_counter()
            page.click("#open-case")
            page.wait_for_function("window.petloop.openSeconds !== undefined", timeout=600_000)
            opened = time.perf_counter() - t0
            first = None
            if args.first_mask:
                page.wait_for_function("window.petloop.maskVersion === 0", timeout=1_800_000)
                first = time.perf_counter() - t0
            browser.close()
        server.should_exit = True
        thread.join(10)
    mb = {k: v / 2**20 for k, v in received.items()}
    print(f"case {args.shape} at {args.spacing} mm, model set {args.models}")
    print(f"{'':36}{'measured':>12}{'goal':>10}")
    print(f"{'Open -> images drawn':36}{opened:>10.1f} s{'<= 10 s':>10}")
    print(f"{'image bytes received (CT, PET)':36}"
          f"{mb.get('ct', 0):>6.1f} + {mb.get('pet', 0):.1f} MB")
    if first is not None:
        print(f"{'Open -> first mask drawn':36}{first:>10.1f} s")


if __name__ == "__main__":
    main()
