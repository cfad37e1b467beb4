from __future__ import annotations

import pytest

from digitscan.files import replacing


def test_replacing_moves_into_place_only_on_success(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with pytest.raises(ValueError), replacing(target) as part:
        part.write_text("half")
        raise ValueError("check failed")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
    with replacing(target) as part:
        assert part.name == "model.onnx.part"
        part.write_text("new")
    assert target.read_text() == "new" and sorted(tmp_path.iterdir()) == [target]
