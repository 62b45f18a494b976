"""The MONAI Label protocol, driven by the real client (``monailabel.client``, installed by
``make test`` without its dependencies) against a live server on loopback."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from serving import serving

with warnings.catch_warnings():  # the client imports the cgi module
    warnings.simplefilter("ignore", DeprecationWarning)
    from monailabel.client import MONAILabelClient
    from monailabel.client.client import MONAILabelClientException


def test_the_monai_label_client_segments_with_petloop(tmp_path, model_set):
    from typer.testing import CliRunner

    from petloop.cli import app as cli
    from petloop.inference.modelset import load_model_set
    from petloop.inference.pipeline import Pipeline
    from petloop.io.clicks import Clicks, write_clicks
    from petloop.io.volume import read_volume
    from petloop.phantom import PhantomConfig, write_phantoms
    from petloop.server.app import ServerConfig, create_app

    config = PhantomConfig.preset("trunk", seed=21, tracer="fdg", negative_fraction=0.0)
    (files,) = write_phantoms(config, tmp_path / "data", 1)
    case = files.load()
    lesion = [int(v) for v in np.argwhere(case.label.array)[0]]
    background = [5, 5, 5]
    ms = load_model_set(model_set)
    app = create_app(Pipeline(ms), ServerConfig(data=tmp_path / "data", max_upload_mb=20.0))
    runner = CliRunner()
    with serving(app) as base:
        url = base.rstrip("/")
        client = MONAILabelClient(url, tmpdir=str(tmp_path / "client"))
        info = client.info()
        assert info["labels"] == ["lesion"] and "config" not in info
        model = info["models"][ms.name]
        assert model["type"] == "deepedit" and model["dimension"] == 3
        assert model["labels"] == {"lesion": 1}
        assert client.auth_enabled() is False
        assert list(client.datastore()["objects"]) == [files.case_id]

        # clicks, as the client sends them; the answer equals `petloop predict`
        want = {}
        for n, (fg, bg) in enumerate((([lesion], []), ([lesion], [background]))):
            write_clicks(Clicks(tuple(map(tuple, fg)), tuple(map(tuple, bg))),
                         tmp_path / f"c{n}.json")
            out = tmp_path / f"p{n}.nii.gz"
            result = runner.invoke(cli, ["predict", "--ct", str(files.ct), "--pet",
                                         str(files.pet), "--out", str(out), "--clicks",
                                         str(tmp_path / f"c{n}.json"), "--models",
                                         str(model_set), "--tracer", "auto",
                                         "--precision", "fp32"])
            assert result.exit_code == 0, result.output
            want[n] = read_volume(out)
            path, params = client.infer(ms.name, files.case_id,
                                        {"foreground": fg, "background": bg,
                                         "label": "lesion"})
            got = read_volume(path)
            assert got.same_grid(case.pet)
            np.testing.assert_array_equal(got.array, want[n].array)
            assert params["label_names"] == {"lesion": 1} and params["clicks"] == n + 1
            assert params["latencies"]["total"] > 0
        assert want[0].array.any()

        # an uploaded image: the PET alone is kept but cannot be segmented; the CT completes it
        session = client.create_session(str(files.pet))
        sid = session["session_id"]
        assert session["session_info"]["missing"] == ["ct"]
        with pytest.raises(MONAILabelClientException, match="holds no CT"):
            client.infer(ms.name, "", {"foreground": [lesion]}, session_id=sid)
        ct_file = tmp_path / "ct_upload.nii.gz"
        ct_file.write_bytes(files.ct.read_bytes())
        assert client.create_session(str(ct_file), {"session_id": sid})["session_info"][
            "ready"]
        assert client.get_session(sid)["session_info"]["images"] == ["ct", "pet"]
        path, _ = client.infer(ms.name, "", {"foreground": [lesion]}, session_id=sid)
        np.testing.assert_array_equal(read_volume(path).array, want[0].array)

        # the protocol's errors, in its shape
        with pytest.raises(MONAILabelClientException, match="404"):
            client.get_session("no-such-session")
        with pytest.raises(MONAILabelClientException, match="no model"):
            client.infer("other", files.case_id, {})
        with pytest.raises(MONAILabelClientException, match="no image"):
            client.infer(ms.name, "../../etc/passwd", {})
        with pytest.raises(MONAILabelClientException, match="lies outside"):
            client.infer(ms.name, files.case_id, {"foreground": [[999, 0, 0]]})
        import urllib.request

        with urllib.request.urlopen(f"{url}/datastore/image?image={files.case_id}") as r:
            image = r.read()
        shown = tmp_path / "shown.nii.gz"
        shown.write_bytes(image)
        np.testing.assert_array_equal(read_volume(shown).array, case.pet.array)
        client.remove_session(sid)
        with pytest.raises(MONAILabelClientException):
            client.get_session(sid)
    assert json.dumps(info)  # the info is plain JSON
