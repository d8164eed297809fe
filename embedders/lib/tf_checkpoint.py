"""Read TensorFlow 1 checkpoints (tensor bundles) without TensorFlow or protobuf.

A checkpoint with prefix ``P`` is two files:

* ``P.index``: an immutable sorted key/value table in the LevelDB "SSTable" format. Keys are
  tensor names; the value of the empty key is a ``BundleHeaderProto`` (number of shards,
  endianness), every other value a ``BundleEntryProto``: ``dtype`` (field 1), ``shape`` (2,
  a ``TensorShapeProto`` whose repeated ``dim`` (2) each carry a ``size`` (1)), ``shard_id`` (3),
  ``offset`` (4), ``size`` (5) and ``crc32c`` (6, fixed32, *masked* as LevelDB masks checksums).
* ``P.data-SSSSS-of-NNNNN``: the raw tensor bytes of each shard, little-endian, row-major,
  at the entry's offset.

The table layout (LevelDB ``table_format``): a 48-byte footer at the end holds two block
handles (varint offset + varint size: the meta-index block and the index block), padding and the
magic number ``0xdb4775248b80fb57``. The index block maps a separator key to the handle of each
data block. A block is a run of prefix-compressed entries (varint ``shared``, ``non_shared``,
``value_length``, the key's new bytes, the value) followed by the restart offsets (uint32 each)
and their count; after each block come one compression-type byte and a masked CRC32C of the block
and that byte. TensorFlow writes bundles uncompressed; compressed blocks are rejected.

Only what TF1 checkpoints use is supported: numeric dtypes, unsliced tensors. Block checksums
are always verified (the index is a few KB); tensor checksums are verified when the tensor is
read with ``verify=True`` (pure Python: about 1 s per 10 MB, so the caller decides).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
_MASK_DELTA = 0xA282EAD8

#: TensorFlow ``DataType`` enum -> numpy dtype (little-endian), the numeric ones.
TF_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "|u1", 5: "<i2", 6: "|i1", 9: "<i8", 10: "|b1",
             14: "<u2", 17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}
#: 14 is bfloat16: returned as its raw uint16 bits.


class CheckpointError(ValueError):
    """The checkpoint files are missing, truncated or not a TF tensor bundle."""


# ------------------------------------------------------------------------------------------------
# CRC32C (Castagnoli), table-driven
def _crc_table() -> list[int]:
    poly = 0x82F63B78
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of ``data`` (continuing from ``crc``); a fast library is used when installed."""
    try:  # optional accelerators; the pure-Python loop below is the fallback
        import google_crc32c  # type: ignore
        return google_crc32c.extend(crc, bytes(data))
    except ImportError:
        pass
    table = _CRC_TABLE
    c = crc ^ 0xFFFFFFFF
    for b in bytes(data):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    """Undo LevelDB/TensorFlow's checksum masking (rotate right by 15 after subtracting a delta)."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB/TensorFlow's checksum masking (the inverse of :func:`unmask_crc`)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------------------
# varints and protobuf wire format
def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns ``(value, next_pos)``."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError("varint longer than 64 bits")


def parse_fields(buf: bytes) -> list[tuple[int, int, object]]:
    """Split a protobuf message into ``(field_number, wire_type, value)``.

    Varints (wire type 0) give ints, fixed32/fixed64 (5/1) give ints, length-delimited (2) give
    bytes. Groups (3/4) are not used by checkpoints and are rejected.
    """
    out = []
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            value = bytes(buf[pos:pos + n])
            if len(value) != n:
                raise CheckpointError("truncated length-delimited field")
            pos += n
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        out.append((field, wire, value))
    return out


def parse_entry(value: bytes) -> dict:
    """Decode a ``BundleEntryProto`` into ``{dtype, shape, shard_id, offset, size, crc32c}``."""
    entry = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None,
             "sliced": False}
    for field, _, val in parse_fields(value):
        if field == 1:
            entry["dtype"] = val
        elif field == 2:
            dims = []
            for f2, _, v2 in parse_fields(val):
                if f2 == 2:  # Dim
                    size = 0
                    for f3, _, v3 in parse_fields(v2):
                        if f3 == 1:
                            size = v3 - (1 << 64) if v3 >= 1 << 63 else v3
                    dims.append(size)
                elif f2 == 3 and v2:
                    raise CheckpointError("tensor of unknown rank")
            entry["shape"] = tuple(dims)
        elif field == 3:
            entry["shard_id"] = val
        elif field == 4:
            entry["offset"] = val
        elif field == 5:
            entry["size"] = val
        elif field == 6:
            entry["crc32c"] = val
        elif field == 7:
            entry["sliced"] = True
    return entry


# ------------------------------------------------------------------------------------------------
# SSTable
def _read_block(data: bytes, offset: int, size: int, what: str) -> bytes:
    end = offset + size
    if end + 5 > len(data):
        raise CheckpointError(f"{what} block runs past the end of the index file (truncated?)")
    block = data[offset:end]
    ctype = data[end]
    stored = struct.unpack_from("<I", data, end + 1)[0]
    if crc32c(data[offset:end + 1]) != unmask_crc(stored):
        raise CheckpointError(f"{what} block checksum mismatch (corrupt index file)")
    if ctype != 0:
        raise CheckpointError(f"{what} block is compressed (type {ctype}); only uncompressed "
                              "tables are supported")
    return block


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise CheckpointError("block too small")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * n_restarts
    if limit < 0:
        raise CheckpointError("bad block restart count")
    out = []
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = read_varint(block, pos)
        non_shared, pos = read_varint(block, pos)
        vlen, pos = read_varint(block, pos)
        if shared > len(key) or pos + non_shared + vlen > limit:
            raise CheckpointError("corrupt block entry")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        out.append((key, block[pos:pos + vlen]))
        pos += vlen
    return out


def read_table(path: str | os.PathLike) -> list[tuple[bytes, bytes]]:
    """All ``(key, value)`` pairs of an uncompressed LevelDB SSTable file, in key order."""
    data = Path(path).read_bytes()
    if len(data) < FOOTER_SIZE:
        raise CheckpointError(f"{path}: too small to be a checkpoint index")
    footer = data[-FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, 40)[0] != TABLE_MAGIC:
        raise CheckpointError(f"{path}: not a TensorFlow checkpoint index (bad magic number)")
    pos = 0
    _, pos = read_varint(footer, pos)  # meta-index offset
    _, pos = read_varint(footer, pos)  # meta-index size
    idx_off, pos = read_varint(footer, pos)
    idx_size, pos = read_varint(footer, pos)
    index = _read_block(data, idx_off, idx_size, "index")
    pairs: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(index):
        off, p = read_varint(handle, 0)
        size, _ = read_varint(handle, p)
        pairs.extend(_block_entries(_read_block(data, off, size, "data")))
    return pairs


# ------------------------------------------------------------------------------------------------
class CheckpointReader:
    """Read the tensors of a TF1 checkpoint given its prefix.

    Parameters
    ----------
    prefix : str or path
        What TensorFlow calls the checkpoint prefix: ``prefix + ".index"`` and
        ``prefix + ".data-00000-of-0000N"`` must exist. (musicnn's prefixes end in ``/``: the
        files are named ``.index`` and ``.data-00000-of-00001`` inside the model folder.)

    Examples
    --------
    >>> r = CheckpointReader("musicnn/MTT_musicnn/")                 # doctest: +SKIP
    >>> r.shapes()["dense/kernel"], r.get("dense/kernel").dtype      # doctest: +SKIP
    ((1506, 200), dtype('float32'))
    """

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = str(prefix)
        index = self.prefix + ".index"
        if not os.path.isfile(index):
            raise CheckpointError(f"no checkpoint index {index}")
        self.entries: dict[str, dict] = {}
        n_shards = 1
        for key, value in read_table(index):
            if key == b"":
                for field, _, val in parse_fields(value):
                    if field == 1:
                        n_shards = val
                    elif field == 2 and val != 0:
                        raise CheckpointError(f"{index}: big-endian checkpoints are not supported")
                continue
            self.entries[key.decode("utf-8")] = parse_entry(value)
        self.n_shards = n_shards
        self._data: dict[int, np.memmap | bytes] = {}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor name with its shape."""
        return {k: e["shape"] for k, e in self.entries.items()}

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def _shard(self, shard_id: int) -> bytes:
        if shard_id not in self._data:
            path = f"{self.prefix}.data-{shard_id:05d}-of-{self.n_shards:05d}"
            if not os.path.isfile(path):
                raise CheckpointError(f"missing checkpoint data file {path}")
            self._data[shard_id] = Path(path).read_bytes()
        return self._data[shard_id]

    def get(self, name: str, verify: bool = False) -> np.ndarray:
        """The tensor ``name`` as a (copied) numpy array of its dtype and shape.

        ``verify=True`` checks the stored CRC32C of the tensor's bytes.
        """
        try:
            e = self.entries[name]
        except KeyError:
            raise KeyError(f"tensor {name!r} not in checkpoint {self.prefix}") from None
        if e["sliced"]:
            raise CheckpointError(f"tensor {name!r} is stored in slices (not supported)")
        if e["dtype"] not in TF_DTYPES:
            raise CheckpointError(f"tensor {name!r} has unsupported dtype enum {e['dtype']}")
        dtype = np.dtype(TF_DTYPES[e["dtype"]])
        count = int(np.prod(e["shape"], dtype=np.int64)) if e["shape"] else 1
        if count * dtype.itemsize != e["size"]:
            raise CheckpointError(f"tensor {name!r}: {e['size']} bytes stored for shape "
                                  f"{e['shape']} of {dtype}")
        data = self._shard(e["shard_id"])
        raw = data[e["offset"]:e["offset"] + e["size"]]
        if len(raw) != e["size"]:
            raise CheckpointError(f"tensor {name!r} runs past the end of the data file (truncated?)")
        if verify and e["crc32c"] is not None and crc32c(raw) != unmask_crc(e["crc32c"]):
            raise CheckpointError(f"tensor {name!r}: checksum mismatch (corrupt data file)")
        return np.frombuffer(raw, dtype=dtype).reshape(e["shape"]).copy()
