"""WebDataset shards: tar members read as a stream and grouped into samples by key, and the
byte-range rule that lets several tasks share one large shard.

A sample is a run of consecutive members sharing a key (``dir/000123.jpg`` and
``dir/000123.json`` -> key ``dir/000123``, extensions ``jpg`` and ``json``). A byte range
``[start, stop)`` of a shard owns the samples after the first *key change* following the first
member header at or after ``start``, up to the first key change following the first header at
or after ``stop``: the reader of each range finds those points from its own bytes alone, so
neighbouring ranges agree without coordination. Parsing is our own (ustar, GNU long names, pax
paths and sizes): :mod:`tarfile` does not expose where a member's header chain begins.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

BLOCK = 512
_META_TYPES = (b"L", b"K", b"x")  # GNU long name / long link, pax header: part of the next member
_FILE_TYPES = (b"0", b"\0", b"7")
_SCAN_WINDOW = 1 << 20  # bytes scanned at a time when looking for a header in a byte range
_LOOKBACK = 64 << 10  # how far back a found header may have its long-name / pax header
_SKIP_CHUNK = 1 << 20


class TarFormatError(Exception):
    """The shard cannot be read on from this point: truncated, or a corrupt header."""


def padded(size: int) -> int:
    """Bytes a member of ``size`` bytes occupies (whole 512-byte blocks)."""
    return -(-size // BLOCK) * BLOCK


@dataclass(frozen=True)
class Header:
    """One 512-byte tar header block."""

    name: str
    size: int
    kind: bytes
    ustar: bool


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(raw: bytes) -> int:
    if raw[:1] and raw[0] & 0x80:  # GNU base-256 for sizes over 8 GiB
        return int.from_bytes(raw[1:], "big")
    text = raw.replace(b"\0", b" ").strip()
    return int(text, 8) if text else 0


def parse_header(block: bytes) -> Header | None:
    """A header block, or None for a zero block (the end-of-archive marker).

    Raises:
        TarFormatError: the checksum does not match (not a header, or a corrupt one).
    """
    if block.count(0) == BLOCK:
        return None
    try:
        stored = _number(block[148:156])
    except ValueError as exc:
        raise TarFormatError("header checksum field is not a number") from exc
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - 256 * sum(1 for b in (*block[:148], *block[156:]) if b > 127)
    if stored not in (unsigned, signed):
        raise TarFormatError("header checksum mismatch")
    magic = block[257:263]
    name = _cstr(block[0:100])
    if magic == b"ustar\0":  # POSIX: a prefix field extends the name
        prefix = _cstr(block[345:500])
        name = f"{prefix}/{name}" if prefix else name
    try:
        size = _number(block[124:136])
    except ValueError as exc:
        raise TarFormatError("header size field is not a number") from exc
    return Header(name, size, block[156:157], magic in (b"ustar\0", b"ustar "))


def _pax_fields(data: bytes) -> dict[str, str]:
    """Records ``"<len> key=value\\n"`` of a pax extended header."""
    fields, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        length = int(data[pos:space])
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        fields[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return fields


class _Blocks:
    """Exact reads from a stream, tracking the offset in the shard."""

    def __init__(self, stream: BinaryIO, offset: int) -> None:
        self._stream, self.pos = stream, offset

    def read(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            chunk = self._stream.read(n - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        self.pos += got
        return b"".join(parts)

    def skip(self, n: int) -> bool:
        """Read past ``n`` bytes (sequential reads keep one request per block); False if short."""
        while n > 0:
            chunk = self.read(min(n, _SKIP_CHUNK))
            if not chunk:
                return False
            n -= len(chunk)
        return True


@dataclass(frozen=True)
class Member:
    """A regular file member: its name, where its header chain starts, and its bytes (None
    when the caller did not want them)."""

    name: str
    offset: int
    data: bytes | None


def iter_members(stream: BinaryIO, offset: int = 0,
                 want: Callable[[str], bool] = lambda _name: True) -> Iterator[Member]:
    """Regular-file members from ``offset`` (a header position) to the end of the archive.

    Raises:
        TarFormatError: at a truncated member, a missing end-of-archive marker or a corrupt
            header; the members before it have been yielded.
    """
    blocks = _Blocks(stream, offset)
    long_name: str | None = None
    pax_size: int | None = None
    chain: int | None = None
    while True:
        at = blocks.pos
        block = blocks.read(BLOCK)
        if len(block) < BLOCK:
            raise TarFormatError(f"shard ends at byte {blocks.pos} inside a header or before the "
                                 "end-of-archive marker (truncated?)")
        try:
            header = parse_header(block)
        except TarFormatError as exc:
            raise TarFormatError(f"{exc} at byte {at} (corrupt shard)") from exc
        if header is None:
            return
        chain = at if chain is None else chain
        if header.kind in _META_TYPES:
            data = blocks.read(padded(header.size))
            if len(data) < padded(header.size):
                raise TarFormatError(f"shard ends at byte {blocks.pos} inside a member (truncated)")
            if header.kind == b"L":
                long_name = _cstr(data[: header.size])
            elif header.kind == b"x":
                pax = _pax_fields(data[: header.size])
                long_name = pax.get("path", long_name)
                pax_size = int(pax["size"]) if "size" in pax else pax_size
            continue
        name, size, start = long_name or header.name, pax_size or header.size, chain
        long_name = pax_size = chain = None
        if header.kind not in _FILE_TYPES or not want(name):
            if not blocks.skip(padded(size)):
                raise TarFormatError(f"shard ends at byte {blocks.pos} inside a member (truncated)")
            if header.kind in _FILE_TYPES:
                yield Member(name, start, None)
            continue
        data = blocks.read(size)
        if len(data) < size or not blocks.skip(padded(size) - size):
            raise TarFormatError(f"shard ends at byte {blocks.pos} inside member {name!r} "
                                 "(truncated)")
        yield Member(name, start, data)


def split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: the extension is everything after the first dot of
    the base name (``a/b.seg.png`` -> ``a/b``, ``seg.png``)."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


@dataclass
class Sample:
    """Consecutive members sharing a key: extension -> bytes (first occurrence of each)."""

    key: str
    offset: int
    members: dict[str, bytes] = field(default_factory=dict)


def _valid_at(window: bytes, pos: int) -> Header | None:
    try:
        header = parse_header(window[pos : pos + BLOCK])
    except (TarFormatError, ValueError):
        return None
    return header if header is not None and header.ustar else None


def find_chain_start(stream: BinaryIO, start: int, size: int) -> int | None:
    """The first member header chain that begins at or after ``start``, found by scanning
    512-byte aligned blocks for a ustar header whose successor is a header or the end.

    A regular header preceded by its own long-name or pax header that begins before ``start``
    is not a chain start (the chain began in the previous range). None: no chain starts there.
    """
    pos = padded(start)
    while pos < size:
        base = max(0, pos - _LOOKBACK)
        stream.seek(base)
        window = _Blocks(stream, base).read(min(size, pos + _SCAN_WINDOW + BLOCK) - base)
        for at in range(pos, min(size, pos + _SCAN_WINDOW), BLOCK):
            header = _valid_at(window, at - base)
            if header is None or not _successor_ok(stream, at, header, size):
                continue
            if header.kind in _META_TYPES or not _continues_meta(window, base, at, start):
                return at
        pos += _SCAN_WINDOW
    return None


def _successor_ok(stream: BinaryIO, at: int, header: Header, size: int) -> bool:
    """Whether the block after this header's data is a header, a zero block or the end."""
    nxt = at + BLOCK + padded(header.size)
    if nxt >= size:
        return nxt == size
    stream.seek(nxt)
    block = _Blocks(stream, nxt).read(BLOCK)
    return len(block) == BLOCK and (block.count(0) == BLOCK or _valid_at(block, 0) is not None)


def _continues_meta(window: bytes, base: int, at: int, start: int) -> bool:
    """Whether the header at ``at`` ends a long-name/pax chain that began before ``start``."""
    for q in range(at - BLOCK, max(base, at - _LOOKBACK) - 1, -BLOCK):
        header = _valid_at(window, q - base)
        if (header is not None and header.kind in _META_TYPES
                and q + BLOCK + padded(header.size) == at):
            return q < start
    return False


def iter_samples(stream: BinaryIO, start: int, stop: int, size: int,
                 want: Callable[[str], bool]) -> Iterator[Sample]:
    """Samples owned by the byte range ``[start, stop)`` of a shard of ``size`` bytes (see the
    module docstring); ``want(extension)`` says which members' bytes to keep.

    Raises:
        TarFormatError: the shard cannot be read on (samples before it have been yielded; the
            sample in progress is dropped, its members may be incomplete).
    """
    offset = 0
    if start > 0:
        found = find_chain_start(stream, start, size)
        if found is None:
            return
        offset = found
    stream.seek(offset)
    skip_key: str | None = None if start == 0 else ""  # "": the first member's key, skipped
    stop_key: str | None = None
    current: Sample | None = None
    for member in iter_members(stream, offset, lambda name: want(split_name(name)[1])):
        key, ext = split_name(member.name)
        if member.offset >= stop and stop_key is None:
            stop_key = key  # the first member at or after ``stop``: its sample is still ours
        if stop_key is not None and key != stop_key:
            break
        if skip_key == "":
            skip_key = key  # the sample in progress at ``start`` belongs to the previous range
        if skip_key is not None:
            if key == skip_key:
                continue
            skip_key = None
        if current is None or key != current.key:
            if current is not None:
                yield current
            current = Sample(key, member.offset)
        if member.data is not None:
            current.members.setdefault(ext, member.data)
    if current is not None:
        yield current


def open_archive(stream: BinaryIO, uri: str) -> BinaryIO:
    """The tar stream of a shard: gzip-decompressed for ``.tar.gz`` / ``.tgz``."""
    if uri.lower().endswith((".gz", ".tgz")):
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    return stream


def splittable(uri: str) -> bool:
    """Byte ranges need random access: plain tar only, not compressed ones."""
    return uri.lower().endswith(".tar")
