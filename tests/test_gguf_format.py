"""phirt.formats.gguf: strict reading of valid files (checked against gguf-py's GGUFReader and
llama.cpp), clear errors on corrupt ones, and the fixture-model factories the engine tests use."""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_factory import (
    LLAMA_VARIANTS,
    N_VOCAB,
    PHI2_VARIANTS,
    PHI3_VARIANTS,
    ModelFactory,
    _tensors,
    build,
    phi3_spec,
    requires_llama_cpp,
)
from phirt.errors import FormatError, PhirtError, UnsupportedError
from phirt.formats.gguf import SUPPORTED_TYPES, GGUFFile, type_layout, type_name
from phirt.formats.gguf import GGUFValueType as GGUFFileValueType
from phirt.tokenizer import TokenType

V = GGUFValueType
Q = GGMLQuantizationType

# -- a tiny GGUF writer with every field under the test's control ------------------------------


def _str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


@dataclass
class Raw:
    """A GGUF file built field by field; ``marks`` records where each section starts."""

    kvs: list[tuple[bytes, int, bytes]] = field(default_factory=list)  # key, value type, value
    infos: list[tuple[str, tuple[int, ...], int, int]] = field(default_factory=list)
    data: bytes = b""
    magic: bytes = b"GGUF"
    version: int = 3
    n_tensors: int | None = None  # override the counts in the header
    n_kv: int | None = None
    alignment: int = 32
    marks: dict[str, int] = field(default_factory=dict)

    def kv(self, key: str | bytes, vtype: int, value: bytes) -> Raw:
        self.kvs.append((key.encode() if isinstance(key, str) else key, vtype, value))
        return self

    def tensor(self, name: str, ne: tuple[int, ...], qtype: int, data: bytes) -> Raw:
        offset = -(-len(self.data) // self.alignment) * self.alignment
        self.data = self.data.ljust(offset, b"\0") + data
        self.infos.append((name, ne, qtype, offset))
        return self

    def bytes(self) -> bytes:
        n_t = len(self.infos) if self.n_tensors is None else self.n_tensors
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        out = bytearray(self.magic + struct.pack("<IQQ", self.version, n_t, n_kv))
        self.marks["kv"] = len(out)
        for key, vtype, value in self.kvs:
            self.marks[f"kv:{key.decode(errors='replace')}"] = len(out)
            out += _str(key) + struct.pack("<I", vtype) + value
        self.marks["infos"] = len(out)
        for name, ne, qtype, offset in self.infos:
            out += _str(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, qtype, offset)
        self.marks["infos_end"] = len(out)
        out += b"\0" * (-len(out) % self.alignment)
        self.marks["data"] = len(out)
        return bytes(out + self.data)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.bytes())
        return path


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def f32s(values: list[float]) -> bytes:
    return u32(V.FLOAT32) + struct.pack(f"<Q{len(values)}f", len(values), *values)


def strs(values: list[str]) -> bytes:
    return u32(V.STRING) + struct.pack("<Q", len(values)) + b"".join(_str(s) for s in values)


def small_raw() -> Raw:
    """A valid file with every kind of metadata value and three tensors (F32, F16, Q8_0)."""
    rng = np.random.default_rng(7)
    q8 = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), Q.Q8_0)
    return (
        Raw()
        .kv("general.architecture", V.STRING, _str("phi3"))
        .kv("phi3.block_count", V.UINT32, u32(2))
        .kv("phi3.rope.freq_base", V.FLOAT32, struct.pack("<f", 10000.0))
        .kv("tokenizer.ggml.add_bos_token", V.BOOL, b"\1")
        .kv("general.int64", V.INT64, struct.pack("<q", -5))
        .kv("tokenizer.ggml.tokens", V.ARRAY, strs(["<unk>", "<s>", "héllo"]))
        .kv("tokenizer.ggml.scores", V.ARRAY, f32s([0.0, -1.5, 2.25]))
        .tensor("output_norm.weight", (8,), Q.F32, np.arange(8, dtype="<f4").tobytes())
        .tensor("blk.0.attn_qkv.weight", (4, 3), Q.F16, np.ones(12, dtype="<f2").tobytes())
        .tensor("token_embd.weight", (64, 2), Q.Q8_0, q8.tobytes())
    )


@pytest.fixture
def small(tmp_path: Path) -> tuple[Raw, Path]:
    raw = small_raw()
    return raw, raw.write(tmp_path / "small.gguf")


def _patch(path: Path, offset: int, new: bytes) -> Path:
    buf = bytearray(path.read_bytes())
    buf[offset : offset + len(new)] = new
    path.write_bytes(bytes(buf))
    return path


def _info_offset(raw: Raw, index: int) -> int:
    """Byte offset of tensor info ``index`` in raw.bytes()."""
    pos = raw.marks["infos"]
    for name, ne, _, _ in raw.infos[:index]:
        pos += 8 + len(name.encode()) + 4 + 8 * len(ne) + 4 + 8
    return pos


def _expect_format_error(path: Path, *fragments: str) -> FormatError:
    with pytest.raises(FormatError) as exc:
        GGUFFile(path)
    message = str(exc.value)
    assert str(path) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return exc.value


# -- valid files -------------------------------------------------------------------------------


def test_small_file_reads_like_gguf_reader(small: tuple[Raw, Path]) -> None:
    _, path = small
    g = GGUFFile(path)
    assert g.arch == "phi3" and g.version == 3
    assert g.metadata["tokenizer.ggml.tokens"] == ["<unk>", "<s>", "héllo"]
    assert g.metadata["tokenizer.ggml.scores"] == [0.0, -1.5, 2.25]
    assert g.metadata["tokenizer.ggml.add_bos_token"] is True
    assert g.metadata["general.int64"] == -5
    assert g.metadata_types["tokenizer.ggml.scores"] == (V.ARRAY, V.FLOAT32)
    assert g.metadata_types["phi3.block_count"] == (V.UINT32, None)
    assert g.get("missing", 42) == 42
    assert g.require("phi3.block_count") == 2
    with pytest.raises(FormatError, match="missing metadata key 'phi3.nope'"):
        g.require("phi3.nope")
    _assert_matches_reader(g, GGUFReader(path))
    norm = g.tensors["output_norm.weight"]
    assert norm.shape == (8,) and norm.data.shape == (32,)
    np.testing.assert_array_equal(norm.to_float32(), np.arange(8, dtype=np.float32))
    qkv = g.tensors["blk.0.attn_qkv.weight"]
    assert qkv.shape == (3, 4) and qkv.data.shape == (3, 8)
    np.testing.assert_array_equal(qkv.to_float32(), np.ones((3, 4), np.float32))
    emb = g.tensors["token_embd.weight"]
    assert (emb.shape, emb.data.shape, emb.type_name) == ((2, 64), (2, 68), "Q8_0")


def _assert_matches_reader(g: GGUFFile, reader: GGUFReader) -> None:
    """Our parse agrees with gguf-py's reader (the reference) key by key and tensor by tensor."""
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(g.metadata) == list(fields)
    for key, f in fields.items():
        expected = f.contents()
        assert g.metadata[key] == expected, key
        assert g.metadata_types[key][0] == f.types[0], key
    assert list(g.tensors) == [t.name for t in reader.tensors]
    for rt in reader.tensors:
        t = g.tensors[rt.name]
        assert t.ggml_type == rt.tensor_type and t.type_name == rt.tensor_type.name
        assert t.shape == tuple(reversed(rt.shape.tolist()))
        assert (t.n_elements, t.n_bytes, t.offset) == (rt.n_elements, rt.n_bytes, rt.data_offset)
        assert t.data.tobytes() == rt.data.tobytes()


def test_vocab_file(vocab_path: Path) -> None:
    g = GGUFFile(vocab_path)
    assert g.arch == "phi3" and g.tensors == {}
    s = g.summary()
    assert (s.vocab_size, s.tokenizer_model, s.has_chat_template) == (N_VOCAB, "llama", True)
    assert (s.context_length, s.block_count, s.n_params) == (4096, 32, 0)
    _assert_matches_reader(g, GGUFReader(vocab_path))


@pytest.mark.parametrize(
    ("arch", "qtype", "variant"),
    [("phi3", "BF16", "longrope"), ("phi2", "Q5_1", "plain"), ("llama", "Q4_K_M", "gqa")],
)
def test_fixture_reads_like_gguf_reader(
    models: ModelFactory, arch: str, qtype: str, variant: str
) -> None:
    path = getattr(models, arch)(qtype, variant)
    _assert_matches_reader(GGUFFile(path), GGUFReader(path))


def test_tensor_data_is_a_read_only_view_of_the_map(models: ModelFactory) -> None:
    g = GGUFFile(models.phi3("Q8_0"))
    emb = g.tensors["token_embd.weight"]
    assert emb.data.shape == (N_VOCAB, 128 // 32 * 34)
    assert not emb.data.flags.writeable
    with pytest.raises(ValueError):
        emb.data[0, 0] = 1
    base = emb.data
    while not isinstance(base, np.memmap) and base.base is not None:
        base = base.base
    assert isinstance(base, np.memmap)


def test_summary_counts(models: ModelFactory) -> None:
    g = GGUFFile(models.phi3("Q4_0", "gqa"))
    s = g.summary()
    assert s.arch == "phi3" and s.file_type == "Q4_0" and s.context_length == 4096
    assert s.n_tensors == len(g.tensors) == 3 + 2 * 6
    assert s.n_params == sum(int(np.prod(t.shape)) for t in g.tensors.values())
    assert s.tensor_types["Q4_0"].count == 2 + 2 * 4  # token_embd, output, 4 matrices per block
    assert s.tensor_types["F32"].count == 1 + 2 * 2
    assert sum(v.n_bytes for v in s.tensor_types.values()) == sum(
        t.n_bytes for t in g.tensors.values()
    )
    assert list(s.tensor_types) == ["Q4_0", "F32"]  # largest first


def test_check_types(tmp_path: Path, models: ModelFactory) -> None:
    GGUFFile(models.phi3("Q5_1")).check_types()
    raw = small_raw().tensor("blk.0.ffn_up.weight", (32, 1), Q.IQ4_NL, bytes(18))
    g = GGUFFile(raw.write(tmp_path / "iq.gguf"))  # valid GGML type: loads
    g.check_types(["token_embd.weight"])
    with pytest.raises(UnsupportedError, match=r"'blk.0.ffn_up.weight' has type IQ4_NL"):
        g.check_types()
    with pytest.raises(FormatError, match="missing tensor 'nope'"):
        g.check_types(["nope"])
    assert {type_name(t) for t in SUPPORTED_TYPES} >= {"Q4_0", "Q8_0", "Q4_K", "Q6_K", "BF16"}
    assert type_name(4) == "type#4"


def test_own_tables_match_gguf_py() -> None:
    """The load path does not import gguf-py; the tables it spells out must be gguf-py's."""
    assert {m.name: int(m) for m in GGUFFileValueType} == {m.name: int(m) for m in GGUFValueType}
    assert {m.name: int(m) for m in TokenType} == {m.name: int(m) for m in gguf.TokenType}
    for t in SUPPORTED_TYPES:
        assert type_layout(t) == (Q(t).name, *gguf.GGML_QUANT_SIZES[Q(t)])
    assert type_layout(Q.IQ4_NL) == ("IQ4_NL", 32, 18)  # looked up in gguf-py
    assert type_layout(4) is None  # a retired id


def test_loading_a_model_imports_neither_gguf_py_nor_jinja2(models: ModelFactory) -> None:
    """Both cost import time and RSS on every load (SmolLM2: ~45 ms, ~11 MB); chat still works,
    compiling its template on first use."""
    code = (
        "import sys, phirt\n"
        f"m = phirt.load({str(models.phi3('Q4_0'))!r}, n_ctx=64)\n"
        "m.generate('hi', max_tokens=2)\n"
        "print(sorted(n for n in ('gguf', 'jinja2') if n in sys.modules))\n"
        "m.chat([{'role': 'user', 'content': 'hi'}], max_tokens=2)\n"
        "print('jinja2' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True"]


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_prefault_maps_the_named_tensors(tmp_path: Path) -> None:
    data = np.arange(8 << 20, dtype=np.uint8).tobytes()  # 8 MiB, never read by this test
    path = Raw().tensor("big.weight", (len(data),), Q.I8, data).write(tmp_path / "big.gguf")
    g = GGUFFile(path)
    g.prefault(["missing.weight"])
    before = _resident_bytes()
    g.prefault(["big.weight"])
    assert _resident_bytes() - before > 6 << 20


def test_string_arrays_name_the_bad_item(tmp_path: Path) -> None:
    good = [f"tok{i}" for i in range(1000)]
    bad_utf8 = strs(good)[:-4] + b"\xc3\x28ok"  # last item "to" + invalid bytes
    cases = {
        "utf8": (bad_utf8, "'tokenizer.ggml.tokens'[999] at offset"),
        "cut": (
            strs(good[:-1]).replace(struct.pack("<Q", 999), struct.pack("<Q", 1000), 1)
            + struct.pack("<Q", 1 << 20)  # a last item longer than the rest of the file
            + b"tok",
            "truncated metadata 'tokenizer.ggml.tokens'[999]",
        ),
    }
    for name, (value, fragment) in cases.items():
        path = Raw().kv("tokenizer.ggml.tokens", V.ARRAY, value).write(tmp_path / f"{name}.gguf")
        _expect_format_error(path, fragment)
    path = Raw().kv("tokenizer.ggml.tokens", V.ARRAY, strs(good)).write(tmp_path / "ok.gguf")
    assert GGUFFile(path).metadata["tokenizer.ggml.tokens"] == good


def test_custom_alignment_and_version_2(tmp_path: Path) -> None:
    raw = small_raw()
    raw.alignment = 64
    raw.version = 2
    raw.kv("general.alignment", V.UINT32, u32(64))
    raw.infos, raw.data = [], b""
    raw.tensor("a.weight", (16,), Q.F32, bytes(64)).tensor("b.weight", (16,), Q.F32, bytes(64))
    g = GGUFFile(raw.write(tmp_path / "a64.gguf"))
    assert g.alignment == 64 and g.data_offset % 64 == 0
    assert g.tensors["b.weight"].offset - g.tensors["a.weight"].offset == 64
    _assert_matches_reader(g, GGUFReader(tmp_path / "a64.gguf"))


# -- corrupt and unusable inputs ---------------------------------------------------------------


def _cut_points(raw: Raw, size: int) -> dict[str, int]:
    m = raw.marks
    return {
        "magic": 2,
        "version": 6,
        "counts": 20,
        "kv key length": m["kv"] + 3,
        "kv key": m["kv"] + 12,
        "kv value": m["kv"] + 8 + len("general.architecture") + 4 + 5,
        "string array": m["kv:tokenizer.ggml.scores"] - 3,
        "float array": m["infos"] - 3,
        "tensor info name": m["infos"] + 10,
        "tensor info dims": _info_offset(raw, 1) + 8 + len("blk.0.attn_qkv.weight") + 6,
        "tensor info offset": m["infos_end"] - 3,
        "padding": m["infos_end"] + 1,
        "tensor data start": m["data"] + 4,
        "tensor data middle": (m["data"] + size) // 2,
        "tensor data last byte": size - 1,
    }


CUTS = [
    "magic",
    "version",
    "counts",
    "kv key length",
    "kv key",
    "kv value",
    "string array",
    "float array",
    "tensor info name",
    "tensor info dims",
    "tensor info offset",
    "padding",
    "tensor data start",
    "tensor data middle",
    "tensor data last byte",
]


@pytest.mark.parametrize("where", CUTS)
def test_truncated_file(tmp_path: Path, where: str) -> None:
    raw = small_raw()
    full = raw.bytes()
    cut = _cut_points(raw, len(full))[where]
    path = tmp_path / "cut.gguf"
    path.write_bytes(full[:cut])
    err = _expect_format_error(path)
    text = str(err)
    in_data = where.startswith(("tensor data", "padding"))
    assert ("runs past end of file" in text) if in_data else ("truncated" in text), text


def test_every_prefix_is_rejected(tmp_path: Path) -> None:
    full = small_raw().bytes()
    path = tmp_path / "prefix.gguf"
    for n in range(1, len(full)):
        path.write_bytes(full[:n])
        with pytest.raises(FormatError):
            GGUFFile(path)


def test_bad_magic(small: tuple[Raw, Path]) -> None:
    _, path = small
    _expect_format_error(_patch(path, 0, b"GGML"), "not a GGUF file", "b'GGML'")


@pytest.mark.parametrize(("version", "fragment"), [(1, "version 1"), (4, "version 4")])
def test_unsupported_version(small: tuple[Raw, Path], version: int, fragment: str) -> None:
    _, path = small
    _patch(path, 4, u32(version))
    with pytest.raises(UnsupportedError, match=fragment):
        GGUFFile(path)


def test_big_endian_file(small: tuple[Raw, Path]) -> None:
    _, path = small
    _patch(path, 4, struct.pack(">I", 3))
    with pytest.raises(UnsupportedError, match="big-endian"):
        GGUFFile(path)


def _info_field(raw: Raw, index: int, what: str) -> int:
    name, ne, _, _ = raw.infos[index]
    pos = _info_offset(raw, index) + 8 + len(name.encode())
    return {"n_dims": pos, "ne": pos + 4, "type": pos + 4 + 8 * len(ne)}.get(
        what, pos + 4 + 8 * len(ne) + 4
    )


def test_tensor_past_end_of_file(small: tuple[Raw, Path]) -> None:
    raw, path = small
    _patch(path, _info_field(raw, 2, "offset"), struct.pack("<Q", 1 << 20))
    _expect_format_error(path, "tensor 'token_embd.weight' data [", "runs past end of file (size ")


def test_tensor_offset_overflow(small: tuple[Raw, Path]) -> None:
    raw, path = small
    _patch(path, _info_field(raw, 2, "offset"), struct.pack("<Q", 2**64 - 32))
    _expect_format_error(path, "runs past end of file")


def test_overlapping_tensors(small: tuple[Raw, Path]) -> None:
    raw, path = small
    _patch(path, _info_field(raw, 1, "offset"), struct.pack("<Q", 0))
    _expect_format_error(path, "overlaps")


def test_misaligned_tensor(small: tuple[Raw, Path]) -> None:
    raw, path = small
    _patch(path, _info_field(raw, 1, "offset"), struct.pack("<Q", raw.infos[1][3] + 4))
    _expect_format_error(path, "'blk.0.attn_qkv.weight'", "alignment 32")


def test_unknown_ggml_type(small: tuple[Raw, Path]) -> None:
    raw, path = small
    _patch(path, _info_field(raw, 0, "type"), u32(99))
    _expect_format_error(path, "tensor 'output_norm.weight' has unknown GGML type id 99")


@pytest.mark.parametrize("n_dims", [0, 5, 2**32 - 1])
def test_bad_n_dims(small: tuple[Raw, Path], n_dims: int) -> None:
    raw, path = small
    _patch(path, _info_field(raw, 0, "n_dims"), u32(n_dims))
    _expect_format_error(path, f"has {n_dims} dimensions")


def test_zero_dimension(small: tuple[Raw, Path]) -> None:
    raw, path = small
    _patch(path, _info_field(raw, 1, "ne") + 8, struct.pack("<Q", 0))
    _expect_format_error(path, "zero dimension")


def test_huge_dimensions(small: tuple[Raw, Path]) -> None:
    raw, path = small
    _patch(path, _info_field(raw, 1, "ne"), struct.pack("<QQ", 2**40, 2**40))
    _expect_format_error(path, "'blk.0.attn_qkv.weight'")


def test_row_not_multiple_of_block(small: tuple[Raw, Path]) -> None:
    raw, path = small
    _patch(path, _info_field(raw, 2, "ne"), struct.pack("<Q", 48))
    _expect_format_error(path, "row length 48 is not a multiple of the Q8_0 block size 32")


def test_duplicate_tensor_name(tmp_path: Path) -> None:
    raw = (
        Raw().tensor("a.weight", (8,), Q.F32, bytes(32)).tensor("a.weight", (8,), Q.F32, bytes(32))
    )
    _expect_format_error(raw.write(tmp_path / "dup.gguf"), "duplicate tensor name 'a.weight'")


def test_duplicate_key(tmp_path: Path) -> None:
    raw = Raw().kv("general.name", V.STRING, _str("x")).kv("general.name", V.STRING, _str("y"))
    _expect_format_error(raw.write(tmp_path / "dup.gguf"), "duplicate metadata key 'general.name'")


@pytest.mark.parametrize(
    ("key", "vtype", "value", "fragment"),
    [
        (b"k", 99, b"", "unknown value type id 99"),
        (b"k", V.BOOL, b"\2", "bool holding 2"),
        (b"k", V.ARRAY, u32(V.BOOL) + struct.pack("<Q", 2) + b"\1\3", "bool array"),
        (b"k", V.ARRAY, u32(77) + struct.pack("<Q", 0), "unknown value type id 77"),
        (b"\xff\xfe", V.UINT8, b"\0", "not valid UTF-8"),
        (b"k", V.STRING, _str(b"\xc3\x28"), "not valid UTF-8"),
        (b"", V.UINT8, b"\0", "metadata key #0 is empty"),
        (b"general.alignment", V.UINT32, u32(24), "not a power of two"),
        (b"general.alignment", V.UINT32, u32(0), "not a power of two"),
        (b"general.alignment", V.UINT64, struct.pack("<Q", 32), "must be a uint32"),
    ],
)
def test_bad_metadata(tmp_path: Path, key: bytes, vtype: int, value: bytes, fragment: str) -> None:
    path = Raw().kv(key, vtype, value).write(tmp_path / "meta.gguf")
    _expect_format_error(path, fragment)


def test_nested_array_is_unsupported(tmp_path: Path) -> None:
    inner = u32(V.UINT8) + struct.pack("<Q", 1) + b"\1"
    nested = u32(V.ARRAY) + struct.pack("<Q", 1) + inner
    path = Raw().kv("k", V.ARRAY, nested).write(tmp_path / "nested.gguf")
    with pytest.raises(UnsupportedError, match="array of arrays"):
        GGUFFile(path)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (Raw(n_kv=2**63), "metadata count 9223372036854775808"),
        (Raw(n_tensors=2**64 - 1), "tensor count 18446744073709551615"),
        (Raw().kv("k", V.STRING, struct.pack("<Q", 2**62)), "truncated metadata 'k'"),
        (Raw().kv("k", V.ARRAY, u32(V.UINT64) + struct.pack("<Q", 2**61)), "array count"),
        (Raw().kv("k", V.ARRAY, u32(V.STRING) + struct.pack("<Q", 2**40)), "array count"),
        (Raw(n_tensors=1).kv("k", V.UINT8, b"\0"), "truncated"),
    ],
    ids=["kv count", "tensor count", "string length", "u64 array", "string array", "no infos"],
)
def test_huge_counts_fail_fast(tmp_path: Path, raw: Raw, fragment: str) -> None:
    path = raw.write(tmp_path / "huge.gguf")
    start = time.perf_counter()
    _expect_format_error(path, fragment)
    assert time.perf_counter() - start < 1.0


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    _expect_format_error(path, "empty file")


def test_directory(tmp_path: Path) -> None:
    _expect_format_error(tmp_path, "is a directory")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.gguf"
    with pytest.raises(PhirtError, match="no such file") as exc:
        GGUFFile(path)
    assert str(path) in str(exc.value)


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_not_a_regular_file() -> None:
    with pytest.raises(FormatError, match="not a regular file"):
        GGUFFile("/dev/null")


# -- fuzzing: damaged files load or raise PhirtError, nothing else -----------------------------

_SMALL = small_raw().bytes()

_mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, len(_SMALL) - 1), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, len(_SMALL) - 1), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(_SMALL)), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, len(_SMALL) - 1), st.just(0)),
    # large values land in counts, lengths, dims and offsets
    st.tuples(st.just("u64"), st.integers(0, len(_SMALL) - 8), st.integers(0, 2**64 - 1)),
)


def _mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in mutations:
        pos = min(pos, max(len(buf) - 1, 0))
        if kind == "set" and buf:
            buf[pos] = value
        elif kind == "cut":
            del buf[pos:]
        elif kind == "insert":
            buf.insert(pos, value)
        elif kind == "delete" and buf:
            del buf[pos]
        elif kind == "u64" and len(buf) >= pos + 8:
            buf[pos : pos + 8] = struct.pack("<Q", value)
    return bytes(buf)


_fuzz_counter = itertools.count()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(mutations=st.lists(_mutation, min_size=1, max_size=6))
def test_mutated_files_never_crash(tmp_path: Path, mutations: list[tuple[str, int, int]]) -> None:
    path = tmp_path / f"fuzz{next(_fuzz_counter)}.gguf"
    path.write_bytes(_mutate(_SMALL, mutations))
    try:
        g = GGUFFile(path)
        g.summary()
        for t in g.tensors.values():
            assert t.data.nbytes == t.n_bytes
            t.to_float32()
    except PhirtError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)


# -- fixture models: what the engine tests are built on ----------------------------------------

ARCH_VARIANTS = (
    [("phi3", v) for v in PHI3_VARIANTS]
    + [("phi2", v) for v in PHI2_VARIANTS]
    + [("llama", v) for v in LLAMA_VARIANTS]
)


def _expected_names(arch: str, variant: str, n_layer: int) -> set[str]:
    """Tensor names llama.cpp 0.3.36's loaders look for (src/models/{phi3,phi2,llama}.cpp)."""
    names = {"token_embd.weight", "output_norm.weight"}
    if variant != "partial_rotary_tied":
        names.add("output.weight")
    if variant == "longrope":
        names |= {"rope_factors_long.weight", "rope_factors_short.weight"}
    per_layer = {
        "phi3": ["attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"],
        "llama": ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm"]
        + ["ffn_gate", "ffn_up", "ffn_down"],
        "phi2": ["attn_norm", "attn_output", "ffn_up", "ffn_down"]
        + (["attn_qkv"] if variant == "fused_qkv" else ["attn_q", "attn_k", "attn_v"]),
    }[arch]
    suffixes = ["weight", "bias"] if arch == "phi2" else ["weight"]
    if arch == "phi2":
        names |= {"output_norm.bias", "output.bias"}
    for i in range(n_layer):
        names |= {f"blk.{i}.{n}.{s}" for n in per_layer for s in suffixes}
    return names


@pytest.mark.parametrize(
    ("arch", "variant"), ARCH_VARIANTS, ids=[f"{a}-{v}" for a, v in ARCH_VARIANTS]
)
def test_fixture_model_layout(models: ModelFactory, arch: str, variant: str) -> None:
    g = GGUFFile(getattr(models, arch)("F32", variant))
    a = g.arch
    assert a == arch
    d, n_layer = g.require(f"{a}.embedding_length"), g.require(f"{a}.block_count")
    n_head, n_kv = g.require(f"{a}.attention.head_count"), g.require(f"{a}.attention.head_count_kv")
    n_ff, n_rot = g.require(f"{a}.feed_forward_length"), g.require(f"{a}.rope.dimension_count")
    assert set(g.tensors) == _expected_names(arch, variant, n_layer)
    hd = d // n_head
    assert g.tensors["token_embd.weight"].shape == (N_VOCAB, d)
    qkv_rows = (n_head + 2 * n_kv) * hd
    if "blk.0.attn_qkv.weight" in g.tensors:
        assert g.tensors["blk.0.attn_qkv.weight"].shape == (qkv_rows, d)
    else:
        assert g.tensors["blk.0.attn_k.weight"].shape == (n_kv * hd, d)
    up_rows = 2 * n_ff if arch == "phi3" else n_ff  # phi3 fuses gate and up
    assert g.tensors["blk.0.ffn_up.weight"].shape == (up_rows, d)
    assert g.tensors["blk.0.ffn_down.weight"].shape == (d, n_ff)
    assert len(g.get("tokenizer.ggml.tokens")) == N_VOCAB
    assert g.get("tokenizer.ggml.model") == "llama"
    if variant == "longrope":
        assert g.tensors["rope_factors_long.weight"].shape == (n_rot // 2,)
        assert g.get("phi3.rope.scaling.original_context_length") < g.get("phi3.context_length")
        assert g.get("phi3.rope.scaling.attn_factor") > 1.0
    if variant == "partial_rotary_tied":
        assert n_rot < hd and n_kv < n_head
    if variant == "swa":
        assert g.get("phi3.attention.sliding_window") > 0
    if arch == "phi2":
        assert g.get("tokenizer.ggml.add_bos_token") is False and n_rot < hd
    g.check_types()


def test_fixture_f32_weights_round_trip(models: ModelFactory) -> None:
    spec = phi3_spec("F32", "longrope")
    g = GGUFFile(models.build(spec))
    for name, expected in _tensors(spec).items():
        np.testing.assert_array_equal(g.tensors[name].to_float32(), expected, err_msg=name)


@pytest.mark.parametrize("qtype", ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_fixture_quantized(models: ModelFactory, qtype: str) -> None:
    g = GGUFFile(models.phi3(qtype))
    assert g.summary().file_type == qtype
    types = {t.type_name for t in g.tensors.values()}
    assert types == {qtype, "F32"}
    assert all(t.ggml_type == Q.F32 for t in g.tensors.values() if len(t.shape) == 1)
    w = g.tensors["blk.0.attn_output.weight"].to_float32()
    ref = _tensors(phi3_spec(qtype))["blk.0.attn_output.weight"]
    assert np.abs(w - ref).max() < 0.2 * np.abs(ref).max()


def test_fixture_files_are_deterministic(tmp_path: Path) -> None:
    spec = phi3_spec("Q4_0", "gqa")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = build(spec, tmp_path / "a"), build(spec, tmp_path / "b")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


@requires_llama_cpp
@pytest.mark.llamacpp
@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q5_K_M", "Q6_K"])
def test_fixture_kquants(models: ModelFactory, qtype: str) -> None:
    g = GGUFFile(models.phi3(qtype))
    s = g.summary()
    assert s.file_type == qtype
    assert {qtype[:4], "Q6_K"} <= set(s.tensor_types)
    g.check_types()


def _llama_cpp_logits(path: Path, text: bytes, n_ctx: int = 256) -> tuple[np.ndarray, list[int]]:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=n_ctx, n_threads=2, verbose=False, logits_all=True)
    try:
        tokens = llm.tokenize(text, add_bos=True)
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)]), tokens
    finally:
        llm.close()


LLAMA_CPP_CASES = [(a, v, "F32") for a, v in ARCH_VARIANTS] + [
    ("phi3", "plain", "Q4_0"),
    ("phi3", "gqa", "Q4_K_M"),
    ("phi3", "partial_rotary_tied", "Q4_K_M"),
    ("llama", "gqa", "Q4_K_M"),
    ("phi2", "plain", "Q8_0"),
]


@requires_llama_cpp
@pytest.mark.llamacpp
@pytest.mark.parametrize(
    ("arch", "variant", "qtype"), LLAMA_CPP_CASES, ids=["-".join(c) for c in LLAMA_CPP_CASES]
)
def test_llama_cpp_loads_fixture(models: ModelFactory, arch: str, variant: str, qtype: str) -> None:
    path = getattr(models, arch)(qtype, variant)
    logits, tokens = _llama_cpp_logits(path, b"The quick brown fox jumps over the lazy dog")
    assert logits.shape == (len(tokens), N_VOCAB)
    assert np.isfinite(logits).all()
    # the weights are scaled for informative logits: a spread of several units, and a top-1 that
    # depends on the context rather than on the current token alone
    assert 2.0 < logits.std() < 20.0
    top = logits.argmax(axis=1)
    assert len(set(top.tolist())) > len(tokens) // 2


@requires_llama_cpp
@pytest.mark.llamacpp
def test_llama_cpp_longrope_switches_on_n_ctx(models: ModelFactory) -> None:
    """llama.cpp picks rope_factors_long when its (256-padded) context exceeds
    original_context_length, whatever the position; the fixture puts that switch at 256."""
    path = models.phi3("F32", "longrope")
    text = b"Hello world, this is a test of long rope"
    short, _ = _llama_cpp_logits(path, text, n_ctx=256)
    short_padded, _ = _llama_cpp_logits(path, text, n_ctx=100)
    long, _ = _llama_cpp_logits(path, text, n_ctx=512)
    np.testing.assert_array_equal(short, short_padded)
    assert np.abs(long - short).max() > 1.0


def test_fixture_copies_the_tokenizer(models: ModelFactory, vocab_path: Path) -> None:
    vocab = GGUFFile(vocab_path).metadata
    model = GGUFFile(models.phi3("F32")).metadata
    tok = {k: v for k, v in vocab.items() if k.startswith("tokenizer.")}
    assert tok == {k: v for k, v in model.items() if k.startswith("tokenizer.")}
