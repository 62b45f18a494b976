from __future__ import annotations

import numpy as np
import pytest

from petloop.io.atomic import atomic_path, write_json_atomic
from petloop.io.volume import Volume, read_volume, write_volume


def test_interrupted_write_keeps_previous_file(tmp_path):
    target = tmp_path / "mask.nii.gz"
    write_volume(Volume(np.ones((4, 4, 4), np.uint8)), target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("killed")
    assert read_volume(target).array.sum() == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]


def test_json_written_whole(tmp_path):
    target = write_json_atomic(tmp_path / "sub" / "a.json", {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    target = write_json_atomic(tmp_path / "p.json", {})
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
