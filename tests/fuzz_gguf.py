"""The GGUF family of the fuzz corpus: seeded mutations of real GGUF files.

A base file is mapped field by field by this module's own scanner (it follows the GGUF spec and
does not use phirt's reader, which is what is under test). A case is a list of edits on the base
bytes, named after what it breaks ("kv 'phi3.block_count' value=0xffffffff", "cut at tensor info
3 +1"), so a failure reads as a bug report and replays from its seed:

- cuts at every section boundary, and one byte past it;
- random cases of one to three mutations: header version and counts, key and string lengths,
  value and array item types, array lengths, metadata values (0, -1, huge, NaN, ...), key bytes,
  tensor n_dims, dims, types and offsets (misaligned, overlapping, past the end, wrapping),
  general.alignment added with odd values, KVs and tensor infos dropped or duplicated, bytes
  inserted and deleted, and tensor data overwritten (garbage, NaN and Inf) so models that still
  load run on nonsense.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fuzz_cases import Case, Edit

# GGUF value types (spec ids): struct format of the fixed-size ones
_SCALAR_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B",
               10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9
_BLOCK = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
          12: (256, 144), 13: (256, 176), 14: (256, 210), 30: (1, 2)}  # fmt: skip

U64_EDGES = (0, 1, 2, 3, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**48, 2**62, 2**63 - 1,
             2**63, 2**64 - 32, 2**64 - 1)  # fmt: skip
U32_EDGES = (0, 1, 2, 3, 7, 8, 31, 32, 33, 255, 256, 4096, 65535, 2**31 - 1, 2**31, 2**32 - 1)
FLOAT_EDGES = (float("nan"), float("inf"), float("-inf"), 0.0, -0.0, -1.0, 1e-45, 1e-30, 1e30,
               3.4e38, -3.4e38)  # fmt: skip


@dataclass
class Field:
    """One field of the file: where it is, how wide, and what it means."""

    kind: str
    pos: int
    size: int
    label: str
    fmt: str = ""  # struct format for numbers
    value: int | float = 0
    vtype: int = -1  # value type of a scalar metadata value


@dataclass
class Layout:
    """A GGUF file seen field by field (the scanner's view, independent of phirt's reader)."""

    data: bytes
    fields: list[Field] = field(default_factory=list)
    boundaries: list[tuple[int, str]] = field(default_factory=list)  # (offset, section name)
    kv_spans: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, key)
    info_spans: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, name)
    tensors: list[dict] = field(default_factory=list)  # name, offset, n_bytes, type, ne
    infos_end: int = 0
    data_start: int = 0
    alignment: int = 32

    def by_kind(self, *kinds: str) -> list[Field]:
        return [f for f in self.fields if f.kind in kinds]


def scan(data: bytes) -> Layout:
    """Map a valid GGUF v2/v3 file. Raises ValueError on anything it does not expect (bases are
    valid files written by gguf-py or llama.cpp)."""
    lay = Layout(data)
    pos = 0

    def take(kind: str, fmt: str, label: str, vtype: int = -1) -> int | float:
        nonlocal pos
        size = struct.calcsize(fmt)
        (value,) = struct.unpack_from(fmt, data, pos)
        lay.fields.append(Field(kind, pos, size, label, fmt, value, vtype))
        pos += size
        return value

    def string(kind: str, label: str) -> str:
        nonlocal pos
        n = int(take(kind + "_len", "<Q", label + " length"))
        text = data[pos : pos + n].decode("utf-8")
        lay.fields.append(Field(kind, pos, n, label))
        pos += n
        return text

    if data[:4] != b"GGUF":
        raise ValueError("not a GGUF file")
    pos = 4
    lay.boundaries.append((4, "magic"))
    take("version", "<I", "header version")
    lay.boundaries.append((pos, "version"))
    n_tensors = int(take("count", "<Q", "header tensor count"))
    n_kv = int(take("count", "<Q", "header metadata count"))
    lay.boundaries.append((pos, "header"))
    for i in range(n_kv):
        start = pos
        lay.boundaries.append((pos, f"kv {i}"))
        key = string("key", f"kv {i} key")
        label = f"kv {key!r}"
        lay.boundaries.append((pos, f"kv {key!r} type"))
        vtype = int(take("vtype", "<I", f"{label} value type"))
        lay.boundaries.append((pos, f"kv {key!r} value"))
        if vtype == _STRING:
            string("str", f"{label} value")
        elif vtype == _ARRAY:
            itype = int(take("atype", "<I", f"{label} item type"))
            count = int(take("alen", "<Q", f"{label} array length"))
            if itype == _STRING:
                for j in range(count):
                    if j in (0, count // 2, count - 1):
                        lay.boundaries.append((pos, f"kv {key!r} item {j}"))
                    string("astr", f"{label}[{j}]")
            else:
                fmt = _SCALAR_FMT[itype]
                for j in range(count):
                    take("aitem", fmt, f"{label}[{j}]", itype)
        else:
            value = take("scalar", _SCALAR_FMT[vtype], f"{label} value", vtype)
            if key == "general.alignment":
                lay.alignment = int(value)
        lay.kv_spans.append((start, pos, key))
    infos = []
    for i in range(n_tensors):
        start = pos
        lay.boundaries.append((pos, f"tensor info {i}"))
        name = string("tname", f"tensor info {i} name")
        label = f"tensor {name!r}"
        n_dims = int(take("ndims", "<I", f"{label} n_dims"))
        ne = [int(take("dim", "<Q", f"{label} dim {d}")) for d in range(n_dims)]
        ttype = int(take("ttype", "<I", f"{label} type"))
        offset = int(take("offset", "<Q", f"{label} offset"))
        lay.info_spans.append((start, pos, name))
        infos.append((name, ne, ttype, offset))
    lay.infos_end = pos
    lay.boundaries.append((pos, "tensor infos end"))
    lay.data_start = -(-pos // lay.alignment) * lay.alignment
    lay.boundaries.append((lay.data_start, "data start"))
    types_seen: set[int] = set()
    for i, (name, ne, ttype, offset) in enumerate(infos):
        block, size = _BLOCK[ttype]
        n = 1
        for d in ne:
            n *= d
        n_bytes = n // block * size
        start = lay.data_start + offset
        lay.tensors.append(dict(name=name, offset=offset, n_bytes=n_bytes, type=ttype, ne=ne))
        lay.boundaries.append((start, f"tensor {name!r} data"))
        # inside the data every cut meets the same check: cut through the first and the last
        # tensor, and the first of each type
        if i in (0, len(infos) - 1) or ttype not in types_seen:
            types_seen.add(ttype)
            lay.boundaries += [
                (start + n_bytes // 2, f"tensor {name!r} data middle"),
                (start + n_bytes, f"tensor {name!r} data end"),
            ]
    lay.boundaries.append((len(data) - 1, "last byte"))
    return lay


def _pack(fmt: str, value: int | float) -> bytes:
    """value packed as fmt, wrapped into range for integer formats."""
    if fmt[-1] in "fd":
        return struct.pack(fmt, float(value))
    bits = struct.calcsize(fmt) * 8
    v = int(value) % (1 << bits)
    if fmt[-1].islower():  # signed
        v = v - (1 << bits) if v >= 1 << (bits - 1) else v
    return struct.pack(fmt, v)


def _set(f: Field, value: int | float) -> Edit:
    return Edit(f.pos, f.size, _pack(f.fmt, value))


def _int_edges(rng: random.Random, f: Field, edges: tuple[int, ...]) -> int:
    v = int(f.value)
    pick = rng.random()
    if pick < 0.5:
        return rng.choice(edges)
    if pick < 0.8:
        return v + rng.choice((-1, 1, -2, 2, 32, -32, v, -v, 7 * v))  # near or a multiple of it
    return rng.getrandbits(8 * f.size)


class GGUFMutator:
    """Seeded cases for one base file. `boundary_cases` are deterministic; `random_case(rng)`
    draws one case of one to three mutations."""

    def __init__(self, base: str, path: Path) -> None:
        self.base = base
        self.path = Path(path)
        self.data = self.path.read_bytes()
        self.lay = scan(self.data)
        lay = self.lay
        self._scalars = lay.by_kind("scalar")
        self._lens = lay.by_kind("key_len", "str_len", "astr_len", "tname_len")
        self._arrays = lay.by_kind("alen")
        self._vtypes = lay.by_kind("vtype")
        self._atypes = lay.by_kind("atype")
        self._aitems = lay.by_kind("aitem")
        self._strings = lay.by_kind("key", "str", "tname")
        self._astrs = lay.by_kind("astr")
        self._infos = {k: lay.by_kind(k) for k in ("ndims", "dim", "ttype", "offset")}
        # weighted operators: name -> (weight, method)
        self._ops = [
            (2, self.op_version),
            (3, self.op_count),
            (8, self.op_length),
            (5, self.op_value_type),
            (3, self.op_array_type),
            (5, self.op_array_length),
            (14, self.op_scalar),
            (4, self.op_array_item),
            (5, self.op_string_bytes),
            (3, self.op_token_bytes),
            (3, self.op_n_dims),
            (8, self.op_dim),
            (6, self.op_tensor_type),
            (8, self.op_offset),
            (4, self.op_alignment),
            (3, self.op_drop_or_dup),
            (4, self.op_insert_delete),
            (4, self.op_random_bytes),
            (6, self.op_tensor_data),
        ]
        self._weights = [w for w, _ in self._ops]

    # -- deterministic: truncation -------------------------------------------------------------

    def boundary_cases(self, sample: int | None = None) -> Iterator[Case]:
        """The file cut at every section boundary, and one byte past it; `sample` keeps that many,
        evenly spaced (for bases whose sections repeat another base's)."""
        cuts: dict[int, str] = {}
        for offset, section in self.lay.boundaries:
            for cut, suffix in ((offset, ""), (offset + 1, " +1")):
                if 0 < cut < len(self.data) and cut not in cuts:
                    cuts[cut] = f"cut at {section}{suffix} ({cut} bytes)"
        chosen = sorted(cuts)
        if sample is not None and sample < len(chosen):
            step = len(chosen) / sample
            chosen = [chosen[int(i * step)] for i in range(sample)]
        for cut in chosen:
            yield self._case(cuts[cut], [Edit.cut(cut)])

    # -- random --------------------------------------------------------------------------------

    def random_case(self, rng: random.Random, seed: int) -> Case:
        n = rng.choice((1, 1, 1, 2, 2, 3))
        names: list[str] = []
        edits: list[Edit] = []
        structural: list[Edit] = []
        for _, op in rng.choices(self._ops, weights=self._weights, k=n):
            label, new = op(rng)
            names.append(label)
            for e in new:
                (structural if e.shifts else edits).append(e)
        # in-place edits use the base's offsets, so any edit that moves bytes goes last, and only
        # one of them (later ones would land on shifted offsets)
        return self._case("; ".join(names), edits + structural[:1], seed)

    def _case(self, name: str, edits: list[Edit], seed: int | None = None) -> Case:
        return Case("gguf", self.base, name, tuple(edits), seed)

    # -- operators: each returns (label, edits) --------------------------------------------------

    def op_version(self, rng: random.Random) -> tuple[str, list[Edit]]:
        f = self.lay.by_kind("version")[0]
        v = rng.choice((0, 1, 2, 3, 4, 0x03000000, 0x00030000, 2**32 - 1, rng.getrandbits(32)))
        return f"version={v:#x}", [_set(f, v)]

    def op_count(self, rng: random.Random) -> tuple[str, list[Edit]]:
        f = rng.choice(self.lay.by_kind("count"))
        v = _int_edges(rng, f, U64_EDGES)
        return f"{f.label}={v % 2**64}", [_set(f, v)]

    def op_length(self, rng: random.Random) -> tuple[str, list[Edit]]:
        f = rng.choice(self._lens)
        v = rng.choice((0, int(f.value) - 1, int(f.value) + 1, len(self.data), 2**63, 2**64 - 1,
                        rng.getrandbits(rng.choice((8, 16, 32, 64)))))  # fmt: skip
        return f"{f.label}={v % 2**64}", [_set(f, v)]

    def op_value_type(self, rng: random.Random) -> tuple[str, list[Edit]]:
        f = rng.choice(self._vtypes)
        v = rng.choice((*range(14), 2**32 - 1, rng.getrandbits(32)))
        return f"{f.label}={v}", [_set(f, v)]

    def op_array_type(self, rng: random.Random) -> tuple[str, list[Edit]]:
        f = rng.choice(self._atypes)
        v = rng.choice((*range(14), 2**31, rng.getrandbits(32)))
        return f"{f.label}={v}", [_set(f, v)]

    def op_array_length(self, rng: random.Random) -> tuple[str, list[Edit]]:
        f = rng.choice(self._arrays)
        v = _int_edges(rng, f, U64_EDGES)
        return f"{f.label}={v % 2**64}", [_set(f, v)]

    def op_scalar(self, rng: random.Random) -> tuple[str, list[Edit]]:
        f = rng.choice(self._scalars)
        if f.fmt[-1] in "fd":
            v: int | float = rng.choice(FLOAT_EDGES) if rng.random() < 0.7 else f.value * 1e3
        elif f.vtype == 7:  # bool
            v = rng.choice((2, 3, 128, 255))
        else:
            v = _int_edges(rng, f, U32_EDGES if f.size <= 4 else U64_EDGES)
        return f"{f.label}={v!r}", [_set(f, v)]

    def op_array_item(self, rng: random.Random) -> tuple[str, list[Edit]]:
        if not self._aitems:
            return self.op_scalar(rng)
        f = rng.choice(self._aitems)
        if f.fmt[-1] in "fd":
            v: int | float = rng.choice(FLOAT_EDGES)
        else:
            v = rng.choice((-1, 0, 7, 255, 2**31, rng.getrandbits(8 * f.size)))
        return f"{f.label}={v!r}", [_set(f, v)]

    def op_string_bytes(self, rng: random.Random) -> tuple[str, list[Edit]]:
        """A byte of a key, string value or tensor name replaced: renamed keys and tensors,
        invalid UTF-8, NUL and control characters."""
        f = rng.choice([s for s in self._strings if s.size])
        at = f.pos + rng.randrange(f.size)
        b = rng.choice((0x00, 0x0A, 0x2E, 0x5F, 0x80, 0xC3, 0xFF, rng.getrandbits(8)))
        return f"{f.label} byte {at - f.pos}={b:#x}", [Edit(at, 1, bytes([b]))]

    def op_token_bytes(self, rng: random.Random) -> tuple[str, list[Edit]]:
        """Vocabulary entries: a byte replaced, or one token copied over another of the same
        length (a duplicate token)."""
        if not self._astrs:
            return self.op_string_bytes(rng)
        f = rng.choice(self._astrs)
        if rng.random() < 0.5 and f.size:
            same = [g for g in self._astrs if g.size == f.size and g.pos != f.pos]
            if same:
                g = rng.choice(same)
                return f"{f.label} := {g.label}", [
                    Edit(f.pos, f.size, self.data[g.pos : g.pos + g.size])
                ]
        if not f.size:
            return self.op_string_bytes(rng)
        at = f.pos + rng.randrange(f.size)
        b = rng.choice((0x00, 0x20, 0x3C, 0x3E, 0x80, 0xFF, rng.getrandbits(8)))
        return f"{f.label} byte {at - f.pos}={b:#x}", [Edit(at, 1, bytes([b]))]

    def op_n_dims(self, rng: random.Random) -> tuple[str, list[Edit]]:
        f = rng.choice(self._infos["ndims"])
        v = rng.choice((0, 1, 2, 3, 4, 5, 2**32 - 1))
        return f"{f.label}={v}", [_set(f, v)]

    def op_dim(self, rng: random.Random) -> tuple[str, list[Edit]]:
        f = rng.choice(self._infos["dim"])
        v = _int_edges(rng, f, U64_EDGES)
        if rng.random() < 0.3:  # swap with the other dim of a matrix: a transposed shape
            mates = [g for g in self._infos["dim"] if g.label.rsplit(" dim ", 1)[0]
                     == f.label.rsplit(" dim ", 1)[0] and g.pos != f.pos]  # fmt: skip
            if mates:
                g = mates[0]
                return f"{f.label} <-> dim", [_set(f, g.value), _set(g, f.value)]
        return f"{f.label}={v % 2**64}", [_set(f, v)]

    def op_tensor_type(self, rng: random.Random) -> tuple[str, list[Edit]]:
        f = rng.choice(self._infos["ttype"])
        v = rng.choice((*range(42), 99, 2**31, 2**32 - 1))
        return f"{f.label}={v}", [_set(f, v)]

    def op_offset(self, rng: random.Random) -> tuple[str, list[Edit]]:
        i = rng.randrange(len(self.lay.tensors))
        f = self._infos["offset"][i]
        other = rng.choice(self.lay.tensors)
        data_size = len(self.data) - self.lay.data_start
        choices = {
            "0": 0,
            "+1": f.value + 1,
            "+alignment": f.value + self.lay.alignment,
            "-alignment": f.value - self.lay.alignment,
            "overlap": other["offset"],
            "overlap+32": other["offset"] + 32,
            "end of data": data_size,
            "past end": data_size + 4096,
            "wraps": 2**64 - self.lay.alignment,
            "huge": 2**63,
            "random": rng.getrandbits(64) & ~31,
        }
        key = rng.choice(list(choices))
        return f"{f.label}={key}", [_set(f, choices[key])]

    def op_alignment(self, rng: random.Random) -> tuple[str, list[Edit]]:
        """general.alignment added as the last KV (tensor infos and data shift down, padded to
        the new alignment): odd values, and the wrong value type."""
        value = rng.choice((0, 1, 2, 3, 8, 16, 24, 64, 128, 4096, 2**31, 2**32 - 1))
        vtype, fmt = rng.choice(((4, "<I"), (4, "<I"), (4, "<I"), (10, "<Q"), (0, "<B"), (5, "<i")))
        kv = _gguf_str(b"general.alignment") + struct.pack("<I", vtype) + _pack(fmt, value)
        lay = self.lay
        head = bytearray(self.data[: lay.infos_end])
        count = lay.by_kind("count")[1]
        head[count.pos : count.pos + 8] = struct.pack("<Q", int(count.value) + 1)
        kv_end = lay.kv_spans[-1][1] if lay.kv_spans else count.pos + 8
        head[kv_end:kv_end] = kv
        align = value if vtype == 4 and value and not value & (value - 1) else lay.alignment
        align = min(align, 1 << 16)
        head += b"\0" * (-len(head) % align)
        new = bytes(head) + self.data[lay.data_start :]
        return f"general.alignment={value} (type {vtype})", [Edit(0, len(self.data), new)]

    def op_drop_or_dup(self, rng: random.Random) -> tuple[str, list[Edit]]:
        """A KV or tensor info removed or repeated, with the header count kept in step."""
        lay = self.lay
        is_kv = rng.random() < 0.6
        spans = lay.kv_spans if is_kv else lay.info_spans
        count = lay.by_kind("count")[1 if is_kv else 0]
        start, end, name = rng.choice(spans)
        dup = rng.random() < 0.5
        head = bytearray(self.data[: lay.infos_end])
        head[count.pos : count.pos + 8] = struct.pack("<Q", int(count.value) + (1 if dup else -1))
        if dup:
            head[end:end] = head[start:end]
        else:
            del head[start:end]
        head += b"\0" * (-len(head) % lay.alignment)
        new = bytes(head) + self.data[lay.data_start :]
        what = "kv" if is_kv else "tensor info"
        return f"{what} {name!r} {'duplicated' if dup else 'dropped'}", [
            Edit(0, len(self.data), new)
        ]

    def op_insert_delete(self, rng: random.Random) -> tuple[str, list[Edit]]:
        at = rng.randrange(4, self.lay.infos_end)
        n = rng.choice((1, 2, 4, 8, 13))
        if rng.random() < 0.5:
            return f"insert {n} bytes at {at}", [Edit(at, 0, rng.randbytes(n))]
        return f"delete {n} bytes at {at}", [Edit(at, n, b"")]

    def op_random_bytes(self, rng: random.Random) -> tuple[str, list[Edit]]:
        at = rng.randrange(4, self.lay.infos_end)
        n = rng.choice((1, 1, 2, 4, 8))
        return f"{n} random bytes at {at}", [Edit(at, n, rng.randbytes(n))]

    def op_tensor_data(self, rng: random.Random) -> tuple[str, list[Edit]]:
        """Weights overwritten: the file still loads and must generate (or stop cleanly) on
        garbage, NaN or Inf, in F32 norms, F16 weights and the f16 scales of quant blocks."""
        t = rng.choice(self.lay.tensors)
        start = self.lay.data_start + t["offset"]
        span = min(t["n_bytes"], rng.choice((2, 16, 256, 4096)))
        at = start + rng.randrange(max(t["n_bytes"] - span, 0) + 1)
        fill = rng.choice(("random", "nan", "inf", "ff"))
        if fill == "random":
            blob = rng.randbytes(span)
        elif fill == "ff":
            blob = b"\xff" * span
        else:  # NaN / Inf as f16 and f32 words (which one lands depends on the tensor type)
            word = (
                struct.pack("<e", float(fill)) if t["type"] != 0 else struct.pack("<f", float(fill))
            )
            blob = (word * span)[:span]
        return f"tensor {t['name']!r} data {span} bytes={fill}", [Edit(at, span, blob)]


def _gguf_str(raw: bytes) -> bytes:
    return struct.pack("<Q", len(raw)) + raw


@dataclass
class GGUFFamily:
    """Cases over several base files: boundary cuts (all of them for the bases in `all_cuts`,
    `cut_sample` of them for the others), then `n_random` random cases spread over the bases in
    proportion to `weights` (big files get few: each case writes a whole copy)."""

    bases: dict[str, Path]
    weights: dict[str, float] = field(default_factory=dict)
    all_cuts: tuple[str, ...] = ()
    cut_sample: int = 40
    name: str = "gguf"

    def __post_init__(self) -> None:
        self._mutators = {b: GGUFMutator(b, p) for b, p in self.bases.items()}

    def cases(self, n_random: int, seed: int, boundaries: bool = True) -> Iterator[Case]:
        if boundaries:
            for name, m in self._mutators.items():
                yield from m.boundary_cases(None if name in self.all_cuts else self.cut_sample)
        names = list(self._mutators)
        w = [self.weights.get(b, 1.0) for b in names]
        for i in range(n_random):
            case_seed = seed * 1_000_003 + i
            rng = random.Random(case_seed)
            base = rng.choices(names, weights=w)[0]
            yield self._mutators[base].random_case(rng, case_seed)

    def materialize(self, case: Case, out_dir: Path) -> Path:
        data = case.apply(self._mutators[case.base].data)
        path = out_dir / f"{case.base}.gguf"
        path.write_bytes(data)
        return path

    def base_size(self, case: Case) -> int:
        return len(self._mutators[case.base].data)
