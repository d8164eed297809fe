"""Write small TF1 tensor bundles (``.index`` + ``.data-00000-of-00001``) for tests.

Written from the format description in ``embedders/lib/tf_checkpoint.py`` (LevelDB table with
restart points, masked CRC32C per block, 48-byte footer; ``BundleEntryProto`` values), so that the
reader can be tested without TensorFlow and without the published weights; the reader is also
checked against the real musicnn checkpoints when they are installed.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from embedders.lib.tf_checkpoint import TABLE_MAGIC, crc32c, mask_crc

DTYPES = {np.dtype("<f4"): 1, np.dtype("<f8"): 2, np.dtype("<i4"): 3, np.dtype("<i8"): 9}


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num: int, wire: int, payload) -> bytes:
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 5:
        return key + struct.pack("<I", payload)
    return key + varint(len(payload)) + payload


def entry_proto(dtype: int, shape, offset: int, size: int, crc: int) -> bytes:
    dims = b"".join(field(2, 2, field(1, 0, d)) for d in shape)
    msg = field(1, 0, dtype) + field(2, 2, dims)
    if offset:
        msg += field(4, 0, offset)
    msg += field(5, 0, size) + field(6, 5, mask_crc(crc))
    return msg


def block(entries: list[tuple[bytes, bytes]], restart_interval: int = 4) -> bytes:
    out = bytearray()
    restarts = []
    prev = b""
    for i, (key, value) in enumerate(entries):
        if i % restart_interval == 0:
            restarts.append(len(out))
            shared = 0
        else:
            shared = 0
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value))
        out += key[shared:] + value
        prev = key
    if not restarts:
        restarts = [0]
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def write_bundle(prefix: str | Path, tensors: dict[str, np.ndarray], *,
                 entries_per_block: int = 5) -> None:
    """Write ``tensors`` as a one-shard TF1 bundle with several data blocks."""
    prefix = str(prefix)
    data = bytearray()
    kv = [(b"", field(1, 0, 1) + field(3, 2, field(1, 0, 1)))]  # header: 1 shard, version 1
    for name in sorted(tensors):
        arr = np.array(tensors[name], order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        kv.append((name.encode(), entry_proto(DTYPES[arr.dtype], arr.shape, len(data), len(raw),
                                              crc32c(raw))))
        data += raw
    table = bytearray()
    index = []

    def emit(payload: bytes) -> tuple[int, int]:
        off = len(table)
        trailer = bytes([0])
        table.extend(payload + trailer + struct.pack("<I", mask_crc(crc32c(payload + trailer))))
        return off, len(payload)

    for i in range(0, len(kv), entries_per_block):
        chunk = kv[i:i + entries_per_block]
        off, size = emit(block(chunk))
        index.append((chunk[-1][0], varint(off) + varint(size)))
    meta = emit(block([]))
    idx = emit(block(index, restart_interval=1))
    handles = varint(meta[0]) + varint(meta[1]) + varint(idx[0]) + varint(idx[1])
    footer = handles + b"\0" * (40 - len(handles)) + struct.pack("<Q", TABLE_MAGIC)
    Path(prefix + ".index").write_bytes(bytes(table) + footer)
    Path(prefix + ".data-00000-of-00001").write_bytes(bytes(data))


def random_musicnn_tensors(family: str = "musicnn", seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors with the published checkpoints' names and shapes (some BN scales
    negative), for tests that need no real weights."""
    rng = np.random.default_rng(seed)

    def bn(name, n):
        return {f"{name}/gamma": rng.uniform(-1.5, 1.5, n), f"{name}/beta": rng.normal(0, 0.3, n),
                f"{name}/moving_mean": rng.uniform(0, 1, n),
                f"{name}/moving_variance": rng.uniform(0.2, 2, n)}

    def conv(name, shape):
        fan_in = int(np.prod(shape[:3]))
        return {f"{name}/kernel": rng.normal(0, 1 / np.sqrt(fan_in), shape),
                f"{name}/bias": rng.normal(0, 0.1, shape[-1])}

    t: dict = {}
    t.update(bn("batch_normalization", 1))
    if family == "vgg":
        for i in range(5):
            t.update(conv(f"{i + 1}CNN", (3, 3, 1 if i == 0 else 128, 128)))
            t.update(bn(f"batch_normalization_{i + 1}", 128))
        t.update({"dense/kernel": rng.normal(0, 0.06, (256, 50)), "dense/bias": rng.normal(0, .1, 50)})
    else:
        shapes = [(7, 38, 1, 204), (7, 67, 1, 204), (128, 1, 1, 51), (64, 1, 1, 51),
                  (32, 1, 1, 51), (7, 561, 1, 64), (7, 64, 1, 64), (7, 64, 1, 64)]
        for i, shape in enumerate(shapes):
            t.update(conv("conv2d" if i == 0 else f"conv2d_{i}", shape))
            t.update(bn(f"batch_normalization_{i + 1}", shape[-1]))
        t.update(bn("batch_normalization_9", 1506))
        t.update(bn("batch_normalization_10", 200))
        t.update({"dense/kernel": rng.normal(0, 0.03, (1506, 200)), "dense/bias": rng.normal(0, .1, 200),
                  "dense_1/kernel": rng.normal(0, 0.07, (200, 50)), "dense_1/bias": rng.normal(0, .1, 50)})
    t["beta1_power"] = np.float32(0.9)  # optimizer state, as in the real files (ignored)
    return {k: np.asarray(v, dtype=np.float32) for k, v in t.items()}
