"""What crosses the pipes between the trusted side and an untrusted child.

Frames are a 4-byte big-endian length followed by UTF-8 JSON (job frames from the trusted side:
``marshal``, see `pack_job`). Values returned by untrusted
code travel as *tagged plain data*: only exact builtin types (``None``, ``bool``, ``int``,
``float``, ``complex``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict``, ``set``,
``frozenset``) plus ``Fraction`` and ``Decimal`` are encoded (stdlib ``Counter``/``OrderedDict``/
``defaultdict`` become dicts, generators become iterators, numpy scalars their builtin value).
Anything else, subclasses included (an ``int`` subclass, an object whose ``__eq__`` always
answers True), becomes an `Unplain` marker that never compares equal to anything. The trusted
side decodes with `decode_value`, so no object created by untrusted code ever reaches a
comparison.
"""

from __future__ import annotations

import json
import marshal
import os
import struct
from collections import Counter, OrderedDict, defaultdict
from decimal import Decimal
from fractions import Fraction
from types import GeneratorType
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 << 20
MAX_DEPTH = 200
MAX_ITER_ITEMS = 1_000_000
_SMALL_INT = 1 << 62
# Stdlib mappings whose equality with a dict is plain dict equality; converted, not rejected.
_DICT_LIKE = (Counter, OrderedDict, defaultdict)
_ITERATOR_TYPES = (GeneratorType, type(map(int, ())), type(filter(None, ())), type(zip()),
                   type(iter([])), type(iter(())), type(iter("")), type(reversed([])), type(enumerate([])))


class FrameError(ValueError):
    """A malformed or oversized frame."""


class NotPlain(TypeError):
    """A value outside the strict plain-data types (raised by ``encode_value(strict=True)``)."""

    def __init__(self, type_name: str):
        super().__init__(f"not plain data: {type_name}")
        self.type_name = type_name


class Unplain:
    """Stands for a value that was not strictly plain data; equal to nothing, not even itself."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<non-plain {self.type_name}>"


def pack(message: Any) -> bytes:
    """One frame holding ``message`` (JSON-serialisable, produced by trusted code)."""
    return _frame(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def write_frame(fd: int, message: Any) -> None:
    """Write one frame to ``fd`` completely (blocking)."""
    write_all(fd, pack(message))


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to ``fd`` completely (blocking)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_exact(fd: int, n: int) -> bytes | None:
    """Read exactly ``n`` bytes, or None at end of file before the first byte."""
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            if got:
                raise FrameError(f"truncated frame ({got} of {n} bytes)")
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_body(fd: int, max_bytes: int) -> bytes | None:
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > max_bytes:
        raise FrameError(f"frame of {size} bytes exceeds {max_bytes}")
    body = read_exact(fd, size) if size else b""
    if body is None:
        raise FrameError("truncated frame")
    return body


def read_frame(fd: int, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Read one frame (blocking); None at a clean end of file."""
    body = _read_body(fd, max_bytes)
    return None if body is None else json.loads(body)


def pack_job(job: dict[str, Any]) -> bytes:
    """One *job* frame: what the trusted side sends a child to start an execution, in ``marshal``
    format so that it can carry code objects compiled by the parent. Never used for data that
    untrusted code produced (``marshal`` is not safe against hostile input; results are JSON)."""
    return _frame(marshal.dumps(job))


def read_job(fd: int) -> dict[str, Any]:
    """Read the job frame written with `pack_job` (blocking)."""
    body = _read_body(fd, MAX_FRAME_BYTES)
    if body is None:
        raise FrameError("no job")
    job = marshal.loads(body)
    if not isinstance(job, dict):
        raise FrameError(f"a job is a dict, got {type(job).__name__}")
    return job


class FrameBuffer:
    """Incremental frame parser for non-blocking readers: ``feed`` bytes, iterate messages."""

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES):
        self._buf = bytearray()
        self._max = max_bytes

    def feed(self, data: bytes) -> list[Any]:
        self._buf += data
        out = []
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            if size > self._max:
                raise FrameError(f"frame of {size} bytes exceeds {self._max}")
            if len(self._buf) < HEADER.size + size:
                break
            body = bytes(self._buf[HEADER.size:HEADER.size + size])
            del self._buf[:HEADER.size + size]
            out.append(json.loads(body))
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


# ------------------------------------------------- worker -> parent execution reports


def pack_report(candidate: int | None, tester: int | None, timed_out: bool, killed: bool, leftovers: int) -> bytes:
    """A worker's report on one execution (exit statuses, ``None`` for a process not started or
    not reaped): a few ASCII fields, cheap to produce in the worker after every fork."""
    def status(code: int | None) -> bytes:
        return b"-" if code is None else b"%d" % code

    return b"R %s %s %d %d %d" % (status(candidate), status(tester), timed_out, killed, leftovers)


def unpack_report(message: bytes) -> dict[str, Any]:
    """Inverse of `pack_report`; raises `FrameError` on anything else."""
    fields = message.split()
    if len(fields) != 6 or fields[0] != b"R":
        raise FrameError(f"malformed worker report {message[:80]!r}")
    try:
        candidate, tester = (None if raw == b"-" else int(raw) for raw in fields[1:3])
        timed_out, killed, leftovers = (int(f) for f in fields[3:])
    except ValueError as exc:
        raise FrameError(f"malformed worker report {message[:80]!r}") from exc
    return {"statuses": {"candidate": candidate, "tester": tester}, "timed_out": bool(timed_out),
            "killed": bool(killed), "leftovers": leftovers}


# ---------------------------------------------------------------- plain-data values


def encode_result(value: Any) -> Any:
    """Tagged form of a value returned by untrusted code: all plain, or one ``{"x": type}`` marker."""
    try:
        return encode_value(value)
    except NotPlain as exc:
        return {"x": exc.type_name}
    except RecursionError:
        return {"x": "too deeply nested"}


def encode_value(value: Any, depth: int = 0) -> Any:
    """Tagged JSON form of ``value``; raises `NotPlain` for anything not strictly plain data."""
    if depth > MAX_DEPTH:
        raise NotPlain("too deeply nested")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -_SMALL_INT < value < _SMALL_INT else {"i": hex(value)}
    if t is float:
        return value
    if t is list:
        return [encode_value(v, depth + 1) for v in value]
    if t is tuple:
        return {"t": [encode_value(v, depth + 1) for v in value]}
    if t is dict or t in _DICT_LIKE:
        return {"d": [[encode_value(k, depth + 1), encode_value(v, depth + 1)] for k, v in dict.items(value)]}
    if t is set:
        return {"s": [encode_value(v, depth + 1) for v in value]}
    if t is frozenset:
        return {"fs": [encode_value(v, depth + 1) for v in value]}
    if t is bytes:
        return {"b": value.hex()}
    if t is complex:
        return {"c": [value.real, value.imag]}
    if t is Fraction:
        return {"fr": [encode_value(value.numerator), encode_value(value.denominator)]}
    if t is Decimal:
        return {"dec": str(value)}
    if getattr(t, "__module__", None) == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return encode_value(value.item(), depth + 1)  # numpy scalar -> the equal builtin number
    if t in _ITERATOR_TYPES:
        items = []
        for item in value:
            if len(items) >= MAX_ITER_ITEMS:
                raise NotPlain("unbounded iterator")
            items.append(encode_value(item, depth + 1))
        return {"it": items}
    raise NotPlain(f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', '?')}")


def decode_value(data: Any, depth: int = 0) -> Any:
    """Inverse of `encode_value` for data decoded by ``json.loads`` (exact builtin types only).

    Raises `FrameError` on anything malformed (unhashable set members, unknown tags, ...).
    """
    if depth > MAX_DEPTH + 2:
        raise FrameError("value nested too deeply")
    t = type(data)
    if data is None or t in (bool, int, float, str):
        return data
    if t is list:
        return [decode_value(v, depth + 1) for v in data]
    if t is not dict or len(data) != 1:
        raise FrameError(f"malformed value of type {t.__name__}")
    ((tag, body),) = data.items()
    try:
        if tag == "t":
            return tuple(decode_value(v, depth + 1) for v in _as_list(body))
        if tag == "d":
            return {decode_value(k, depth + 1): decode_value(v, depth + 1) for k, v in _as_list(body)}
        if tag == "s":
            return {decode_value(v, depth + 1) for v in _as_list(body)}
        if tag == "fs":
            return frozenset(decode_value(v, depth + 1) for v in _as_list(body))
        if tag == "b" and type(body) is str:
            return bytes.fromhex(body)
        if tag == "i" and type(body) is str:
            return int(body, 16)
        if tag == "c":
            re_, im = _as_list(body)
            if type(re_) is not float or type(im) is not float:
                raise FrameError("complex parts must be floats")
            return complex(re_, im)
        if tag == "it":
            return iter([decode_value(v, depth + 1) for v in _as_list(body)])
        if tag == "fr":
            num, den = (decode_value(v, depth + 1) for v in _as_list(body))
            if type(num) is not int or type(den) is not int:
                raise FrameError("fraction parts must be ints")
            return Fraction(num, den)
        if tag == "dec" and type(body) is str and len(body) < 10_000:
            return Decimal(body)
        if tag == "x" and type(body) is str:
            return Unplain(body[:200])
    except (TypeError, ValueError) as exc:  # unhashable member, bad hex, wrong arity
        raise FrameError(f"malformed {tag!r} value: {exc}") from None
    raise FrameError(f"unknown value tag {tag!r}")


def _as_list(body: Any) -> list:
    if type(body) is not list:
        raise FrameError("expected a list")
    return body
