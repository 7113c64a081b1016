"""The safetensors file format, read and written with the standard library and torch (no extra dependency).

A ``.safetensors`` file (Hugging Face's format for weights, which unlike a pickled ``pytorch_model.bin`` cannot run
code when loaded) is:

    8 bytes      N, the header's length, an unsigned little-endian integer
    N bytes      a JSON object: for every tensor {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]},
                 plus an optional "__metadata__": {string: string}; padded with spaces to a multiple of 8 bytes
    the rest     the tensors' raw bytes, little-endian, row-major (C order), each at its offsets from the start of
                 this buffer, back to back with no gaps

    save_file({"w": torch.ones(2, 3)}, "model.safetensors", metadata={"format": "pt"})
    tensors = load_file("model.safetensors")
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from nanotrain.errors import CheckpointError

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 << 20  # the reference implementation refuses larger headers too: no real file comes close


def save_file(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` atomically. Tensors must not share memory (store a tied weight once)."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    blobs, offset, seen = [], 0, {}
    for name, t in tensors.items():
        if t.dtype not in NAMES:
            raise ValueError(f"{name}: dtype {t.dtype} has no safetensors name")
        if t.numel() and (t.untyped_storage().data_ptr(), t.storage_offset()) in seen:
            raise ValueError(f"{name} shares memory with {seen[t.untyped_storage().data_ptr(), t.storage_offset()]}:"
                             f" store a tied tensor once")
        seen[t.untyped_storage().data_ptr(), t.storage_offset()] = name
        data = t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()  # native order: little-endian
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the buffer then starts 8-byte aligned, so a reader can map it in place
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_header(path) -> tuple[dict, int]:
    """(header dict, byte position where the data buffer starts), checked against the file's size."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path} is not a safetensors file (header length {n} does not fit the file)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object")
    return header, 8 + n


def load_file(path) -> dict[str, torch.Tensor]:
    """Every tensor in ``path``, on the CPU. Every offset, dtype and shape is checked before it is used."""
    path = Path(path)
    header, start = read_header(path)
    header.pop("__metadata__", None)
    buffer_len = path.stat().st_size - start
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or info.get("dtype") not in DTYPES or set(info) != {"dtype", "shape",
                                                                                           "data_offsets"}:
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed entry {str(info)[:120]}")
        begin, end = info["data_offsets"]
        numel = 1
        for d in info["shape"]:
            numel *= d
        if not 0 <= begin <= end <= buffer_len or end - begin != numel * DTYPES[info["dtype"]].itemsize:
            raise CheckpointError(f"{path}: tensor {name!r} ({info['dtype']} {info['shape']}) has offsets "
                                  f"[{begin}, {end}] that do not match its size or the file")
        spans.append((begin, end, name))
    spans.sort()
    covered = 0
    for begin, end, name in spans:  # back to back: no tensor overlaps another, no bytes are unaccounted for
        if begin != covered:
            raise CheckpointError(f"{path}: tensor {name!r} starts at byte {begin} of the data, expected {covered}")
        covered = end
    if covered != buffer_len:
        raise CheckpointError(f"{path}: {buffer_len - covered} bytes after the last tensor")
    with open(path, "rb") as f:
        f.seek(start)
        data = bytearray(f.read())
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        flat = torch.frombuffer(data, dtype=torch.uint8, offset=begin, count=end - begin) if end > begin else \
            torch.empty(0, dtype=torch.uint8)
        out[name] = flat.view(DTYPES[info["dtype"]]).reshape(info["shape"]).clone()
    return out
