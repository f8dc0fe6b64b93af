"""Fast reader of GGUF file headers (metadata and tensor table) for estimates; tensor data is never loaded."""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from gpustack.estimate.gguf_types import GGML_TYPES, SCALAR_FORMATS, GGUFValueType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# Arrays with at least this many elements are not kept: a tokenizer vocabulary is 32k-262k strings.
MAX_KEPT_ARRAY = 1024

_CHUNK = 1 << 20
_MAX_DIMS = 8  # ggml uses 4; anything far beyond is a corrupt header, not a tensor
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset
_MAX_NESTING = 8  # arrays of arrays are legal but unused; a deep nest is a corrupt or hostile file
_VALUE_TYPES = frozenset(int(t) for t in GGUFValueType)
_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d+)-of-(?P<count>\d+)\.gguf$")


class GGUFError(ValueError):
    """A file that is not a readable GGUF model; the message names the file and what is wrong."""


@dataclass(frozen=True)
class GGUFArray:
    """Stands in for a metadata array too long to keep (vocabulary, merges, scores): its type and length."""

    element_type: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One entry of the tensor table; `shape` is in ggml order (innermost dimension first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # relative to the header's data_offset
    n_bytes: int

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass
class GGUFHeader:
    """What a GGUF file says about itself: metadata, tensor table, and where tensor data starts."""

    path: str
    version: int
    metadata: dict[str, Any]
    tensors: list[GGUFTensorInfo]
    data_offset: int
    file_size: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def alignment(self) -> int:
        return int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))

    @property
    def tensor_bytes(self) -> int:
        """Bytes of tensor data this file holds (padding between tensors excluded)."""
        return sum(t.n_bytes for t in self.tensors)

    @property
    def expected_size(self) -> int:
        """The file size the tensor table implies; a smaller file_size means the data is cut short."""
        end = max((t.offset + t.n_bytes for t in self.tensors), default=0)
        return self.data_offset + end

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def arch_value(self, suffix: str, default: Any = None) -> Any:
        """An architecture-relative key: arch_value("block_count") reads "<architecture>.block_count"."""
        return self.metadata.get(f"{self.architecture}.{suffix}", default)


class _Reader:
    """Sequential reader over a file in 1 MiB chunks; every read is bounded by the file size."""

    def __init__(self, file: BinaryIO, path: str, file_size: int) -> None:
        self._file = file
        self._path = path
        self._size = file_size
        self._buf = b""
        self._base = 0  # file offset of _buf[0]
        self._pos = 0  # read position inside _buf
        self.set_byte_order("<")

    def set_byte_order(self, order: str) -> None:
        self._u32 = struct.Struct(order + "I")
        self._u64 = struct.Struct(order + "Q")
        self._scalars = {t: struct.Struct(order + f) for t, f in SCALAR_FORMATS.items()}
        self._order = order

    @property
    def offset(self) -> int:
        return self._base + self._pos

    @property
    def remaining(self) -> int:
        return self._size - self.offset

    def error(self, what: str) -> GGUFError:
        return GGUFError(f"{self._path}: {what}")

    def _fill(self, n: int) -> None:
        if self._pos + n <= len(self._buf):
            return
        if n > self.remaining:
            raise self.error(
                f"header is truncated at byte {self._size} (needed {n} bytes at byte {self.offset})"
            )
        rest = self._buf[self._pos :]
        self._base += self._pos
        self._pos = 0
        self._buf = rest + self._file.read(max(n - len(rest), _CHUNK))
        if len(self._buf) < n:  # the file shrank while we read it
            raise self.error(f"header is truncated at byte {self._base + len(self._buf)}")

    def skip(self, n: int) -> None:
        if n > self.remaining:
            raise self.error(
                f"header is truncated at byte {self._size} (needed {n} bytes at byte {self.offset})"
            )
        if self._pos + n <= len(self._buf):
            self._pos += n
            return
        self._base = self.offset + n
        self._buf = b""
        self._pos = 0
        self._file.seek(self._base)

    def raw(self, n: int) -> bytes:
        self._fill(n)
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        return data

    def unpack(self, st: struct.Struct) -> Any:
        self._fill(st.size)
        value = st.unpack_from(self._buf, self._pos)[0]
        self._pos += st.size
        return value

    def u32(self) -> int:
        return int(self.unpack(self._u32))

    def u64(self) -> int:
        return int(self.unpack(self._u64))

    def length(self, what: str, min_item_bytes: int = 1) -> int:
        """A u64 count of items of at least `min_item_bytes` each, refused when the file cannot hold them."""
        start = self.offset
        n = self.u64()
        if n * min_item_bytes > self.remaining:
            raise self.error(
                f"{what} at byte {start} claims {n} items, more than the {self.remaining} bytes left"
                f" in the file (header is truncated at byte {self._size} or corrupt)"
            )
        return n

    def string(self, what: str) -> str:
        n = self.length(f"length of {what}")
        return self.raw(n).decode("utf-8", errors="replace")

    def skip_strings(self, count: int, what: str) -> None:
        """Skip `count` strings without decoding them: the hot path for 262k-token vocabularies."""
        u64 = self._u64
        remaining = count
        while remaining:
            buf, pos, end = self._buf, self._pos, len(self._buf)
            while remaining and pos + 8 <= end:
                nxt = pos + 8 + u64.unpack_from(buf, pos)[0]
                if nxt > end:
                    break
                pos = nxt
                remaining -= 1
            self._pos = pos
            if remaining:  # the next string crosses the end of the buffer
                self.skip(self.length(f"length of an element of {what}"))
                remaining -= 1

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        scalar = self._scalars.get(vtype)
        if scalar is not None:
            return self.unpack(scalar)
        if vtype == GGUFValueType.STRING:
            return self.string(what)
        if vtype == GGUFValueType.ARRAY:
            return self.array(what, depth + 1)
        raise self.error(f"{what} has unknown value type {vtype} (at byte {self.offset - 4})")

    def array(self, what: str, depth: int = 1) -> Any:
        if depth > _MAX_NESTING:
            raise self.error(f"{what} nests arrays more than {_MAX_NESTING} deep (at byte {self.offset})")
        etype = self.u32()
        if etype not in _VALUE_TYPES:
            raise self.error(f"{what} is an array of unknown value type {etype} (at byte {self.offset - 4})")
        scalar = self._scalars.get(etype)
        min_bytes = scalar.size if scalar else (8 if etype == GGUFValueType.STRING else 12)
        count = self.length(what, min_bytes)
        if count < MAX_KEPT_ARRAY:
            if scalar is not None:
                data = self.raw(count * scalar.size)
                return list(struct.unpack(f"{self._order}{count}{SCALAR_FORMATS[etype]}", data))
            return [self.value(etype, f"element {i} of {what}", depth) for i in range(count)]
        if scalar is not None:
            self.skip(count * scalar.size)
        elif etype == GGUFValueType.STRING:
            self.skip_strings(count, what)
        else:
            for i in range(count):
                self.array(f"element {i} of {what}", depth + 1)
        return GGUFArray(etype, count)


def _read_version(reader: _Reader, path: str) -> int:
    magic = reader.raw(min(4, reader.remaining))
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{path} is not a GGUF file (magic {magic!r})")
    version = reader.u32()
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped not in SUPPORTED_VERSIONS:
            raise GGUFError(f"{path}: GGUF version {version} is not supported (only 2 and 3)")
        reader.set_byte_order(">")  # a big-endian file (as written for s390x)
        version = swapped
    return version


def _read_metadata(reader: _Reader, path: str) -> dict[str, Any]:
    n_kv = reader.length("metadata count", _MIN_KV_BYTES)
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = reader.string(f"metadata key {i} of {n_kv}")
        if key in metadata:
            raise reader.error(f"metadata key {key!r} appears twice")
        vtype = reader.u32()
        metadata[key] = reader.value(vtype, f"metadata {key!r}")
    return metadata


def _read_tensor_infos(reader: _Reader, n_tensors: int) -> list[tuple[str, tuple[int, ...], int, int]]:
    infos = []
    for i in range(n_tensors):
        name = reader.string(f"name of tensor {i} of {n_tensors}")
        n_dims = reader.u32()
        if n_dims > _MAX_DIMS:
            raise reader.error(f"tensor {name!r} claims {n_dims} dimensions (at byte {reader.offset - 4})")
        shape = tuple(reader.u64() for _ in range(n_dims))
        ggml_type = reader.u32()
        offset = reader.u64()
        infos.append((name, shape, ggml_type, offset))
    return infos


def _tensor_table(
    infos: list[tuple[str, tuple[int, ...], int, int]], data_bytes: int
) -> list[GGUFTensorInfo]:
    """Tensor infos with byte sizes; a type the table does not know is sized by the gap to the next tensor."""
    ends = sorted({offset for _, _, _, offset in infos} | {data_bytes})
    tensors = []
    for name, shape, ggml_type, offset in infos:
        known = GGML_TYPES.get(ggml_type)
        n_elements = 1
        for dim in shape:
            n_elements *= dim
        if known is not None:
            n_bytes = known.n_bytes(n_elements)
        else:
            following = [end for end in ends if end > offset]
            n_bytes = following[0] - offset if following else 0
        tensors.append(GGUFTensorInfo(name, shape, ggml_type, offset, n_bytes))
    return tensors


def read_gguf_header_from(file: BinaryIO, path: str, file_size: int) -> GGUFHeader:
    """Parse a GGUF header from an open binary file of `file_size` bytes; `path` names it in errors."""
    reader = _Reader(file, path, file_size)
    version = _read_version(reader, path)
    n_tensors = reader.length("tensor count", _MIN_TENSOR_INFO_BYTES)
    metadata = _read_metadata(reader, path)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if (
        not isinstance(alignment, int)
        or isinstance(alignment, bool)
        or alignment <= 0
        or alignment & (alignment - 1)
    ):
        raise GGUFError(f"{path}: general.alignment must be a power of two, got {alignment!r}")
    infos = _read_tensor_infos(reader, n_tensors)
    data_offset = -(-reader.offset // alignment) * alignment
    tensors = _tensor_table(infos, max(file_size - data_offset, 0))
    return GGUFHeader(path, version, metadata, tensors, data_offset, file_size)


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Read the metadata and tensor table of a GGUF file; raises GGUFError for anything unreadable."""
    name = os.fspath(path)
    try:
        with open(name, "rb", buffering=0) as file:
            size = os.fstat(file.fileno()).st_size
            return read_gguf_header_from(file, name, size)
    except OSError as e:
        raise GGUFError(f"{name}: cannot read the file ({e.strerror or e})") from e


def shard_paths(path: str | os.PathLike[str], count: int | None = None) -> list[str]:
    """All shard paths of a split model from any one of them (`<name>-00001-of-00003.gguf`), in order."""
    name = os.fspath(path)
    directory, base = os.path.split(name)
    match = _SHARD_NAME.match(base)
    if match is None:
        raise GGUFError(
            f"{name}: the model is split into {count} files but the name does not follow "
            f"<name>-00001-of-{count or 0:05d}.gguf, so the other shards cannot be found"
        )
    width = len(match["no"])
    named_count = int(match["count"])
    if count is not None and count != named_count:
        raise GGUFError(f"{name}: split.count is {count} but the file name says {named_count} shards")
    prefix = match["prefix"]
    return [
        os.path.join(directory, f"{prefix}-{i:0{width}d}-of-{match['count']}.gguf")
        for i in range(1, named_count + 1)
    ]


def read_gguf_shards(first_path: str | os.PathLike[str]) -> list[GGUFHeader]:
    """Headers of every shard of a model in order (one header when it is not split)."""
    name = os.fspath(first_path)
    first = read_gguf_header(name)
    count = first.get("split.count")
    if count is None:
        if _SHARD_NAME.match(os.path.basename(name)) is None:
            return [first]
    elif int(count) <= 1:
        return [first]
    paths = shard_paths(name, None if count is None else int(count))
    for i, shard in enumerate(paths, start=1):
        if not os.path.isfile(shard):
            raise GGUFError(f"{name}: shard {i} of {len(paths)} is missing: {shard}")
    headers = []
    for i, shard in enumerate(paths):
        header = first if os.path.abspath(shard) == os.path.abspath(name) else read_gguf_header(shard)
        split_no = header.get("split.no")
        if split_no is not None and int(split_no) != i:
            raise GGUFError(
                f"{shard}: split.no is {split_no}, expected {i} for shard {i + 1} of {len(paths)}"
            )
        headers.append(header)
    return headers
