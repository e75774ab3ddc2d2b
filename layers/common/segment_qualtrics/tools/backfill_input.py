"""The backfill's input: Segment events, one per line (plain or gzip), or one JSON array of events.

Read as hostile: no line is held beyond ``max_bytes`` (a longer one is skipped as it streams past and
reported), no parser ever recurses on the structure (the array is cut into elements by a bracket counter),
bad UTF-8, deep JSON and huge numbers are left to the ingest's own body checks (``read_body``), and a
corrupt gzip stream ends the input with ``InputError`` after the lines read before it.

Each record carries its line number (1-based; the element number in a JSON array) and the offset just
after it in the decompressed stream: a checkpoint stores that offset, and ``records(..., start=offset)``
goes on from there (a gzip stream is decompressed again up to it: gzip cannot seek).
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 64 * 1024
_WHITESPACE = b" \t\r\n"


class InputError(Exception):
    """The input cannot be read on (a corrupt gzip stream, an unreadable file): the run stops reading."""


@dataclass(frozen=True, slots=True)
class Record:
    number: int            # line number (NDJSON) or element number (JSON array), from 1
    end: int               # offset just after it in the decompressed stream: where a resume starts
    data: bytes | None     # the line's bytes (None when it was too long to keep)
    problem: str | None = None


@dataclass
class Position:
    """Where reading stopped: the next record's number and offset, and the format that was detected."""

    number: int = 0
    offset: int = 0
    array: bool | None = None


def open_input(path: str) -> tuple[BinaryIO, BinaryIO]:
    """(decompressed stream, raw file): gzip when the file starts with gzip's magic bytes.

    The raw file's position says how far through the file the reading is (the progress bar)."""
    raw = open(path, "rb")  # noqa: SIM115 - the caller closes both
    head = raw.read(2)
    raw.seek(0)
    if head == GZIP_MAGIC:
        return io.BufferedReader(_Gunzip(raw), CHUNK), raw
    return raw, raw


class _Gunzip(io.RawIOBase):
    """A gzip stream (one member or several, as ``cat a.gz b.gz``), decompressed in small steps, so that a
    corrupt or truncated stream yields every byte before the damage, then raises. Output is bounded per
    step (``max_length``): a decompression bomb streams like any large file."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = b""          # compressed bytes not yet fed
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if not self.pending and not self.ended:
                self.pending = self.raw.read(16 * 1024)
                self.ended = not self.pending
            if self.inflater.eof:   # a member ended: another may follow
                rest = self.inflater.unused_data + self.pending
                if not rest.strip(b"\0"):
                    if self.ended:
                        return 0
                    self.pending = b""
                    continue
                if not rest.startswith(GZIP_MAGIC):
                    raise gzip.BadGzipFile("bytes after the end of the gzip stream are not gzip")
                self.inflater, self.pending = zlib.decompressobj(16 + zlib.MAX_WBITS), rest
            if not self.pending and self.ended:
                raise EOFError("the gzip stream ends before its end marker (a truncated file?)")
            out = self.inflater.decompress(self.pending, len(buffer))
            # The input this step's bounded output left; at a member's end, the rest is in unused_data (zlib
            # may keep a copy in unconsumed_tail too: reading both would repeat the next member).
            self.pending = b"" if self.inflater.eof else self.inflater.unconsumed_tail
            if out:
                buffer[: len(out)] = out
                return len(out)


def records(stream: BinaryIO, max_bytes: int, position: Position | None = None) -> Iterator[Record]:
    """Every record from ``position`` on (default: the start). ``position`` is updated as records are read."""
    position = position or Position()
    try:
        _skip_to(stream, position.offset)
        if position.array is None:
            position.array = _starts_array(stream)
        if position.array:
            yield from _array_records(stream, max_bytes, position)
        else:
            yield from _line_records(stream, max_bytes, position)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError(f"the gzip stream is corrupt after record {position.number} "
                         f"(byte {position.offset} of the decompressed data): {exc}") from None
    except OSError as exc:
        raise InputError(f"cannot read the input after record {position.number}: {exc}") from None


def _skip_to(stream: BinaryIO, offset: int) -> None:
    if offset <= 0:
        return
    try:
        stream.seek(offset)
        return
    except (OSError, io.UnsupportedOperation):
        pass
    left = offset
    while left > 0:
        chunk = stream.read(min(CHUNK, left))
        if not chunk:
            raise InputError(f"the input is shorter than the checkpoint's offset {offset}: not the same file")
        left -= len(chunk)


def _starts_array(stream: BinaryIO) -> bool:
    """A JSON array when the first byte that is not whitespace (after a UTF-8 BOM) is "["."""
    head = stream.peek(CHUNK) if hasattr(stream, "peek") else b""
    text = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    return text.lstrip(_WHITESPACE)[:1] == b"["


def _line_records(stream: BinaryIO, max_bytes: int, position: Position) -> Iterator[Record]:
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        size = len(line)
        too_long = not line.endswith(b"\n") and size > max_bytes
        while too_long:   # drop the rest of it as it streams past, never holding it
            rest = stream.readline(CHUNK)
            size += len(rest)
            if not rest or rest.endswith(b"\n"):
                break
        position.number += 1
        position.offset += size
        if too_long:
            yield Record(position.number, position.offset, None,
                         f"the line is {size} bytes; the limit is {max_bytes}")
            continue
        text = line.strip(_WHITESPACE)
        if position.number == 1 and text.startswith(b"\xef\xbb\xbf"):
            text = text[3:]
        if text:
            yield Record(position.number, position.offset, text)


_SCAN = re.compile(rb'["\[\]{},]')
_STRING_STOP = re.compile(rb'["\\]')


def _array_records(stream: BinaryIO, max_bytes: int, position: Position) -> Iterator[Record]:
    """The elements of a top-level JSON array, cut out by counting brackets outside strings (no recursion).

    ``position.offset`` 0 is before the "["; any other offset is just after an element.
    """
    buffer = stream.read(CHUNK)
    base = position.offset   # stream offset of buffer[0]
    at = 0
    eof = False

    def more() -> bool:
        nonlocal buffer, eof
        if eof:
            return False
        chunk = stream.read(CHUNK)
        if not chunk:
            eof = True
            return False
        buffer += chunk
        return True

    def skip_blank() -> bool:
        """Move ``at`` past whitespace; False at the end of the input."""
        nonlocal at
        while True:
            while at < len(buffer) and buffer[at] in _WHITESPACE:
                at += 1
            if at < len(buffer) or not more():
                return at < len(buffer)

    if position.offset == 0:
        if buffer.startswith(b"\xef\xbb\xbf"):
            at = 3
        skip_blank()
        at += 1   # the "[" that _starts_array saw
    expect_comma = position.offset != 0
    while True:
        if not skip_blank():
            position.number += 1
            yield Record(position.number, base + at, None, "the JSON array is not closed (the input ends early)")
            return
        byte = buffer[at]
        if byte == ord("]"):
            at += 1
            position.offset = base + at
            if skip_blank():
                position.number += 1
                yield Record(position.number, base + len(buffer), None, "content after the end of the JSON array")
            return
        if expect_comma:
            if byte != ord(","):
                position.number += 1
                yield Record(position.number, base + at, None, "expected ',' or ']' between the array's elements")
                return
            at += 1
            if not skip_blank():
                continue
        # One element: from ``at`` to the "," or "]" that closes it at depth 0.
        start, depth, in_string, escaped, dropped, scan = at, 0, False, False, 0, at
        end = None
        while end is None:
            while scan < len(buffer):
                if in_string:
                    if escaped:   # the byte after a backslash belongs to the string, whatever it is
                        escaped, scan = False, scan + 1
                        continue
                    match = _STRING_STOP.search(buffer, scan)
                    if match is None:
                        scan = len(buffer)
                        break
                    scan = match.start() + 1
                    if buffer[scan - 1] == 0x5C:
                        escaped = True
                    else:
                        in_string = False
                    continue
                match = _SCAN.search(buffer, scan)
                if match is None:
                    scan = len(buffer)
                    break
                scan = match.start()
                byte = buffer[scan]
                if byte == 0x22:
                    in_string = True
                elif byte in b"[{":
                    depth += 1
                elif byte in b"]}":
                    if depth == 0:
                        end = scan
                        break
                    depth -= 1
                elif byte == 0x2C and depth == 0:
                    end = scan
                    break
                scan += 1
            if end is not None:
                break
            if scan - start > max_bytes:   # too long: keep scanning, stop keeping
                dropped += scan - start
                base += scan
                buffer, scan, start = buffer[scan:], 0, 0
            if not more():
                position.number += 1
                yield Record(position.number, base + len(buffer), None,
                             "the JSON array is not closed (the input ends inside an element)")
                return
        size = dropped + end - start
        position.number += 1
        element = buffer[start:end].strip(_WHITESPACE)
        at = end
        position.offset = base + at
        expect_comma = True
        if dropped or size > max_bytes:
            yield Record(position.number, position.offset, None,
                         f"the element is {size} bytes; the limit is {max_bytes}")
        elif not element:
            yield Record(position.number, position.offset, None, "an empty element")
        else:
            yield Record(position.number, position.offset, element)
        if at > CHUNK:   # drop what was read
            base += at
            buffer, at = buffer[at:], 0
