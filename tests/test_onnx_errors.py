"""Broken or unfamiliar ONNX Runtime GenAI folders: phirt.load raises one PhirtError, one line,
naming the file (and the node and op where there is one) and the problem; never a crash or a
guess. Each case edits a copy of a builder-made folder (onnx_factory.py)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import phirt
from onnx_factory import OnnxFactory
from phirt.cli import main
from phirt.errors import FormatError, PhirtError, UnsupportedError

onnx = pytest.importorskip("onnx")

BIG = ("model.onnx.data", "tokenizer.json")  # linked, not copied, unless a case edits them


@pytest.fixture(scope="module")
def phi3(onnx_models: OnnxFactory) -> Path:
    return onnx_models.get("phi3")


def copy_folder(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.name in BIG:
            os.symlink(f, dst / f.name)
        else:
            shutil.copy2(f, dst / f.name)
    return dst


def edit_graph(folder: Path, change: Callable[[Any], None]) -> None:
    path = folder / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    change(model.graph)
    path.write_bytes(model.SerializeToString())


def node(graph: Any, name: str) -> Any:
    return next(n for n in graph.node if n.name == name)


def set_attr(n: Any, name: str, value: Any) -> None:
    for a in n.attribute:
        if a.name == name:
            n.attribute.remove(a)
            break
    n.attribute.append(onnx.helper.make_attribute(name, value))


def expect(folder: Path, exc: type[PhirtError], match: str) -> PhirtError:
    with pytest.raises(exc, match=match) as info:
        phirt.load(folder)
    assert "\n" not in str(info.value)
    assert str(folder) in str(info.value)  # names the folder or a file in it
    return info.value


L0 = "/model/layers.0"


def test_unknown_model_type(phi3: Path, tmp_path: Path) -> None:
    folder = copy_folder(phi3, tmp_path / "m")
    cfg = json.loads((folder / "genai_config.json").read_text())
    cfg["model"]["type"] = "gpt2"
    (folder / "genai_config.json").write_text(json.dumps(cfg))
    expect(folder, UnsupportedError, r"unknown model type 'gpt2' in genai_config.json")


def test_layer_count_that_does_not_fit_the_graph(phi3: Path, tmp_path: Path) -> None:
    folder = copy_folder(phi3, tmp_path / "m")
    cfg = json.loads((folder / "genai_config.json").read_text())
    cfg["model"]["decoder"]["num_hidden_layers"] = 3
    (folder / "genai_config.json").write_text(json.dumps(cfg))
    err = expect(folder, FormatError, "genai_config.json says 3 layers, the graph has 2")
    assert err.path is not None and err.path.endswith("genai_config.json")


def test_op_outside_the_map(phi3: Path, tmp_path: Path) -> None:
    folder = copy_folder(phi3, tmp_path / "a")
    edit_graph(folder, lambda g: setattr(node(g, f"{L0}/mlp/act_fn/Sigmoid"), "op_type", "Tanh"))
    expect(
        folder,
        UnsupportedError,
        rf"node '{L0}/mlp/act_fn/Sigmoid' \(Tanh\) is not an op phirt maps for 'silu_sigmoid'",
    )
    folder = copy_folder(phi3, tmp_path / "b")

    def add_node(g: Any) -> None:
        g.node.append(onnx.helper.make_node("Relu", ["input_ids"], ["r"], name="/model/extra/Relu"))

    edit_graph(folder, add_node)
    expect(folder, UnsupportedError, r"node '/model/extra/Relu' \(Relu\) is outside phirt's map")


def test_attribute_phirt_does_not_implement(phi3: Path, tmp_path: Path) -> None:
    folder = copy_folder(phi3, tmp_path / "a")
    edit_graph(
        folder, lambda g: set_attr(node(g, f"{L0}/attn/GroupQueryAttention"), "softcap", 30.0)
    )
    expect(folder, UnsupportedError, r"\(com.microsoft.GroupQueryAttention\) has softcap=30.0")
    folder = copy_folder(phi3, tmp_path / "b")

    def scale_all(g: Any) -> None:
        for n in g.node:
            if n.op_type == "GroupQueryAttention":
                set_attr(n, "scale", 0.5)

    edit_graph(folder, scale_all)
    expect(folder, UnsupportedError, r"has scale=0.5; phirt uses 1/sqrt\(head_size=32\)")
    folder = copy_folder(phi3, tmp_path / "c")
    edit_graph(folder, lambda g: set_attr(node(g, f"{L0}/attn/qkv_proj/MatMul_Q4"), "bits", 3))
    expect(folder, UnsupportedError, r"has bits=3, block_size=32 \(phirt reads bits 4 and 8\)")


def test_wiring_phirt_would_compute_differently(phi3: Path, tmp_path: Path) -> None:
    """SiLU of the up projection instead of the gate: same ops, another function."""
    folder = copy_folder(phi3, tmp_path / "m")

    def swap(g: Any) -> None:
        sig = node(g, f"{L0}/mlp/act_fn/Sigmoid")
        sig.input[0] = f"{L0}/mlp/up_proj/MatMul/output_0"

    edit_graph(folder, swap)
    expect(folder, UnsupportedError, r"act_fn/Sigmoid' \(Sigmoid\) reads '/model/layers.0/mlp/up")


def test_mismatched_shapes(phi3: Path, tmp_path: Path) -> None:
    folder = copy_folder(phi3, tmp_path / "a")
    edit_graph(folder, lambda g: set_attr(node(g, f"{L0}/attn/o_proj/MatMul_Q4"), "N", 64))
    expect(folder, FormatError, r"o_proj/MatMul_Q4.*B has shape \(128, 4, 16\)")
    folder = copy_folder(phi3, tmp_path / "b")

    def resize_norm(g: Any) -> None:
        t = next(t for t in g.initializer if t.name == "model.layers.0.input_layernorm.weight")
        t.dims[0] = 64
        for e in t.external_data:
            if e.key == "length":
                e.value = "256"

    edit_graph(folder, resize_norm)
    expect(folder, UnsupportedError, r"input_layernorm/LayerNorm.*has input 1 of shape \(64,\)")


def test_missing_truncated_or_overrun_data(phi3: Path, tmp_path: Path) -> None:
    folder = copy_folder(phi3, tmp_path / "a")
    (folder / "model.onnx.data").unlink()
    err = expect(folder, FormatError, "missing")
    assert err.path is not None and err.path.endswith("model.onnx.data")
    folder = copy_folder(phi3, tmp_path / "b")
    (folder / "model.onnx.data").unlink()
    data = (phi3 / "model.onnx.data").read_bytes()
    (folder / "model.onnx.data").write_bytes(data[: len(data) // 2])
    expect(folder, FormatError, r"model.onnx.data: truncated: tensor '.+' needs bytes")
    folder = copy_folder(phi3, tmp_path / "c")

    def overrun(g: Any) -> None:
        for e in g.initializer[0].external_data:
            if e.key == "offset":
                e.value = str(1 << 33)

    edit_graph(folder, overrun)
    expect(folder, FormatError, "truncated")


def test_missing_config_or_tokenizer(phi3: Path, tmp_path: Path) -> None:
    folder = copy_folder(phi3, tmp_path / "a")
    (folder / "genai_config.json").unlink()
    expect(folder, FormatError, "no genai_config.json: not an ONNX Runtime GenAI folder")
    folder = copy_folder(phi3, tmp_path / "b")
    (folder / "tokenizer.json").unlink()
    expect(folder, FormatError, "no tokenizer.json or tokenizer.model")
    folder = copy_folder(phi3, tmp_path / "c")
    cfg = json.loads((folder / "genai_config.json").read_text())
    cfg["model"]["eos_token_id"] = [32007, 99999]
    (folder / "genai_config.json").write_text(json.dumps(cfg))
    expect(folder, FormatError, r"model.eos_token_id 99999 is not a token id in \[0, 32064\)")


def test_context_longer_than_the_rotary_tables(phi3: Path) -> None:
    with pytest.raises(UnsupportedError, match=r"longer than the model's rotary tables \(4096"):
        phirt.load(phi3, n_ctx=5000)


def test_cli_prints_one_line(phi3: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = copy_folder(phi3, tmp_path / "m")
    edit_graph(folder, lambda g: setattr(node(g, f"{L0}/mlp/act_fn/Sigmoid"), "op_type", "Tanh"))
    for cmd in ("info", "generate"):
        args = [cmd, str(folder)] + (["-p", "hi"] if cmd == "generate" else [])
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "phirt: error:" in err and "(Tanh)" in err
