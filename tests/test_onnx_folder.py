"""formats/onnx_folder.py: an ONNX Runtime GenAI folder read with external data memory-mapped, and
every way such a folder can be broken reported as one line naming the file.

The folders here are written with the onnx package itself (onnx.save with external data), small
enough to make per test; the builder-made fixtures (onnx_factory.py) are read by test_onnx_load.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from phirt.errors import FormatError, PhirtError, UnsupportedError  # noqa: E402
from phirt.formats.onnx_folder import OnnxFolder  # noqa: E402

WEIGHT = np.arange(64 * 32, dtype=np.float32).reshape(64, 32) / 7.0
SCALES = np.linspace(0.5, 2.0, 16, dtype=np.float32)


def write_folder(folder: Path, *, config: dict | None = None) -> Path:
    """A one-node graph (MatMul by an external weight) with a second external initializer and an
    embedded one, as the builder lays them out: model.onnx + model.onnx.data."""
    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/lm_head/MatMul")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        initializer=[
            numpy_helper.from_array(WEIGHT, "w"),
            numpy_helper.from_array(SCALES, "scales"),
            numpy_helper.from_array(np.array([3], np.int64), "small"),
        ],
    )
    model = helper.make_model(graph)
    onnx.save(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=64,
    )
    cfg = config or {"model": {"type": "phi3", "decoder": {"filename": "model.onnx"}}}
    (folder / "genai_config.json").write_text(json.dumps(cfg))
    return folder


def edit_external(folder: Path, name: str, **entries: str) -> None:
    """Rewrite one initializer's external_data entries (location, offset, length)."""
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        if t.name == name:
            for e in t.external_data:
                if e.key in entries:
                    e.value = entries[e.key]
    (folder / "model.onnx").write_bytes(model.SerializeToString())


def test_reads_initializers_as_views_of_the_data_file(tmp_path: Path) -> None:
    f = OnnxFolder(write_folder(tmp_path / "m"))
    assert f.model_type == "phi3"
    w = f.array("w")
    np.testing.assert_array_equal(w, WEIGHT)
    assert not w.flags.writeable
    assert isinstance(w.base, np.memmap) or isinstance(w.base.base, np.memmap)  # not a copy
    np.testing.assert_array_equal(f.array("scales"), SCALES)
    assert f.array("small").tolist() == [3]  # embedded (under the size threshold)


def expect(exc: type[PhirtError], match: str, folder: Path) -> PhirtError:
    with pytest.raises(exc, match=match) as info:
        OnnxFolder(folder)
    assert "\n" not in str(info.value)
    return info.value


def test_missing_folder_and_missing_config(tmp_path: Path) -> None:
    expect(PhirtError, "not a folder", tmp_path / "absent")
    folder = write_folder(tmp_path / "m")
    (folder / "genai_config.json").unlink()
    err = expect(FormatError, "no genai_config.json", folder)
    assert err.path == str(folder)


def test_unreadable_config(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m")
    (folder / "genai_config.json").write_text("{not json")
    err = expect(FormatError, "unreadable JSON", folder)
    assert err.path is not None and err.path.endswith("genai_config.json")
    (folder / "genai_config.json").write_text(json.dumps({"model": {"type": "phi3"}}))
    expect(FormatError, "model.decoder", folder)


def test_missing_or_escaping_model_file(tmp_path: Path) -> None:
    cfg = {"model": {"type": "phi3", "decoder": {"filename": "other.onnx"}}}
    expect(FormatError, "'other.onnx' does not exist", write_folder(tmp_path / "a", config=cfg))
    cfg = {"model": {"type": "phi3", "decoder": {"filename": "../model.onnx"}}}
    expect(FormatError, "outside the folder", write_folder(tmp_path / "b", config=cfg))


def test_corrupt_graph(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m")
    (folder / "model.onnx").write_bytes(b"\xff\xff\xff\x07 this is not protobuf")
    err = expect(FormatError, "not a valid ONNX model", folder)
    assert err.path is not None and err.path.endswith("model.onnx")


def test_missing_data_file(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m")
    (folder / "model.onnx.data").unlink()
    err = expect(FormatError, "missing", folder)
    assert err.path is not None and err.path.endswith("model.onnx.data")


def test_truncated_data_file(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m")
    data = folder / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    err = expect(FormatError, r"truncated: tensor '\w+' needs bytes", folder)
    assert err.path is not None and err.path.endswith("model.onnx.data")


def test_offset_past_the_end(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m")
    edit_external(folder, "scales", offset=str(1 << 40))
    expect(FormatError, "truncated: tensor 'scales'", folder)
    edit_external(folder, "scales", offset="-64")
    expect(FormatError, "truncated: tensor 'scales'", folder)
    edit_external(folder, "scales", offset="twelve")
    expect(FormatError, "non-numeric", folder)


def test_length_that_does_not_fit_the_shape(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m")
    edit_external(folder, "w", length="100")
    expect(
        FormatError,
        r"tensor 'w' has 100 bytes of external data, its shape \[64, 32\] needs",
        folder,
    )


def test_data_file_outside_the_folder(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m")
    (tmp_path / "elsewhere.data").write_bytes((folder / "model.onnx.data").read_bytes())
    edit_external(folder, "w", location="../elsewhere.data")
    expect(FormatError, "outside the folder", folder)
    edit_external(folder, "w", location="/etc/passwd")
    expect(FormatError, "outside the folder", folder)


def test_unsupported_data_type(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m")
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    model.graph.initializer[2].data_type = TensorProto.COMPLEX64
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    expect(UnsupportedError, "tensor 'small' has ONNX data type 14", folder)
