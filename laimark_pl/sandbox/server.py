"""The Docker sandbox's in-container server: the process pool behind a framed-JSON unix socket.

Runs inside the hardened container as ``python -I -m laimark_pl.sandbox.server --connect SOCK``.
It builds a ``ProcessSandbox(isolate=False)`` (the container is the isolation boundary; the pool
still gives every execution its own temp dir, rlimits, a wall-clock kill of its process tree and
output caps), then connects to the host's listening socket, says hello and answers requests
until the host hangs up. Frames are a 4-byte big-endian length followed by that many bytes of
ASCII JSON:

    -> {"op": "check", "programs": [program_to_dict(p), ...]}
    <- {"ok": true, "verdicts": [verdict_to_dict(v), ...]}      (same order)
    -> {"op": "ping"}          <- {"ok": true}
    anything else              <- {"ok": false, "error": "..."}

The server and the pool's workers are non-dumpable (by ``prctl``, and because the image's
interpreter is execute-only), so a program, which runs under the same uid, can
neither ptrace them nor read their memory or file descriptors through /proc. Between batches the
server kills any process that is not part of the pool and wipes the container's shared scratch
space (``/tmp`` outside the workers' own dirs, ``/dev/shm``, ``/dev/mqueue``) and its System V
IPC objects, so nothing an execution leaves behind reaches a later batch; if that fails, the
reply asks the host for a fresh container. Standard library only: the image carries nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Sequence

from laimark_pl.sandbox.isolation import remove_sysv_ipc
from laimark_pl.sandbox.types import Program, Verdict, program_to_dict, verdict_to_dict

PROTOCOL_VERSION = 1
FRAME_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = (1 << 32) - 1  # the header's limit; a batch of megabyte-size programs fits
PR_SET_DUMPABLE = 4
SHARED_SCRATCH = ("/tmp", "/dev/shm", "/dev/mqueue")
WORKER_SCRATCH = re.compile(r"laimark-sandbox-\d+-\w+")  # the pool's per-worker dirs (emptied, kept)


class ProtocolError(RuntimeError):
    """A malformed or oversized frame."""


class ConnectionClosedError(EOFError):
    """The peer closed the connection (between or inside a frame)."""


def encode_frame(message: dict) -> bytes:
    """One frame: length header + ASCII JSON (lone surrogates survive as ``\\udcxx`` escapes)."""
    payload = json.dumps(message, separators=(",", ":"), default=repr).encode("ascii")
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return FRAME_HEADER.pack(len(payload)) + payload


def send_frame(sock: socket.socket, message: dict, deadline: float | None = None) -> None:
    """Send one frame; ``deadline`` is a ``time.monotonic()`` instant (None: block)."""
    _set_timeout(sock, deadline)
    sock.sendall(encode_frame(message))


def recv_frame(sock: socket.socket, deadline: float | None = None) -> dict:
    """Receive one frame; raises `ConnectionClosedError` at EOF, `TimeoutError` past ``deadline``."""
    (size,) = FRAME_HEADER.unpack(_recv_exactly(sock, FRAME_HEADER.size, deadline))
    payload = _recv_exactly(sock, size, deadline)
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"frame holds {type(message).__name__}, expected an object")
    return message


def _set_timeout(sock: socket.socket, deadline: float | None) -> None:
    if deadline is None:
        sock.settimeout(None)
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    sock.settimeout(remaining)


def _recv_exactly(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        _set_timeout(sock, deadline)
        count = sock.recv_into(view[received:], min(size - received, 1 << 22))
        if count == 0:
            raise ConnectionClosedError(f"connection closed after {received} of {size} bytes")
        received += count
    return bytes(buffer)


def program_from_dict(data: object) -> Program:
    """Strictly typed inverse of `program_to_dict`; `ValueError` names the bad field."""
    if not isinstance(data, dict):
        raise ValueError(f"program is {type(data).__name__}, expected an object")
    for name in ("code", "tests"):
        if not isinstance(data.get(name), str):
            raise ValueError(f"program field {name!r} must be a string, got {type(data.get(name)).__name__}")
    entry_point = data.get("entry_point")
    if entry_point is not None and not isinstance(entry_point, str):
        raise ValueError(f"program field 'entry_point' must be a string or null, got {type(entry_point).__name__}")
    return Program(code=data["code"], tests=data["tests"], entry_point=entry_point)


def handle(sandbox, request: dict) -> dict:
    """Answer one request with the given pool (anything with ``check(programs)``)."""
    op = request.get("op")
    if op == "ping":
        return {"ok": True}
    if op != "check":
        return {"ok": False, "error": f"unknown op {op!r}"}
    raw = request.get("programs")
    if not isinstance(raw, list):
        return {"ok": False, "error": "'programs' must be a list"}
    verdicts: list[Verdict | None] = [None] * len(raw)
    valid: list[tuple[int, Program]] = []
    for index, item in enumerate(raw):
        try:
            valid.append((index, program_from_dict(item)))
        except ValueError as exc:
            verdicts[index] = Verdict(status="error", passed=False, detail=str(exc))
    for (index, _), verdict in zip(valid, sandbox.check([p for _, p in valid]), strict=True):
        verdicts[index] = verdict
    return {"ok": True, "verdicts": [verdict_to_dict(v) for v in verdicts]}


def sweep(keep_pids: set[int], roots: Sequence[str] = SHARED_SCRATCH, *, container: bool = False) -> list[str]:
    """Empty the shared scratch ``roots``; in the ``container``, also kill every process of this uid
    outside ``keep_pids`` (and this one and its ancestors) and drop System V IPC objects.

    Returns what could not be cleaned (empty when all is clean). Never kills anything as root.
    """
    problems = _kill_strays(keep_pids) if container else []
    for root in roots:
        if not os.path.isdir(root):
            continue
        for entry in os.listdir(root):
            path = os.path.join(root, entry)
            is_worker_dir = WORKER_SCRATCH.fullmatch(entry) and os.path.isdir(path) and not os.path.islink(path)
            try:
                if is_worker_dir:
                    for inner in os.listdir(path):
                        _remove(os.path.join(path, inner))
                else:
                    _remove(path)
            except (OSError, RecursionError) as exc:
                problems.append(f"cannot remove {path}: {exc}")
    return problems + (remove_sysv_ipc() if container else [])


def _kill_strays(keep_pids: set[int]) -> list[str]:
    uid = os.getuid()
    if uid == 0:
        return ["refusing to kill stray processes as root"]
    keep = keep_pids | {os.getpid(), os.getppid(), 1}
    problems = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in keep:
            continue
        try:
            if _real_uid(entry) == uid:  # not st_uid: /proc/<pid> of a non-dumpable process is root's
                os.kill(int(entry), signal.SIGKILL)
        except (ProcessLookupError, FileNotFoundError):
            pass  # exited meanwhile
        except OSError as exc:
            problems.append(f"cannot kill stray process {entry}: {exc.strerror}")
    return problems


def _real_uid(pid: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return -1


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)  # an execution may have made its dirs unwritable
        for entry in os.listdir(path):
            _remove(os.path.join(path, entry))
        os.rmdir(path)
    else:
        os.unlink(path)


def serve(sandbox, conn: socket.socket, sweep_between_batches: bool = False) -> None:
    """Answer requests on ``conn`` until the host hangs up (`sweep` after every batch if asked:
    only inside the container, where the server owns every process and scratch dir it sees)."""
    while True:
        try:
            request = recv_frame(conn)
        except ConnectionClosedError:
            return
        except ProtocolError as exc:  # a whole frame arrived, so the stream is still in step
            send_frame(conn, {"ok": False, "error": str(exc)})
            continue
        try:
            reply = handle(sandbox, request)
        except Exception as exc:  # keep serving: the host turns this into "error" verdicts
            traceback.print_exc(file=sys.stderr)
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if request.get("op") == "check" and sweep_between_batches:
            problems = sweep(set(sandbox.worker_pids), container=True)
            if problems:
                reply["dirty"] = "; ".join(problems)[:1000]
        send_frame(conn, reply)


def make_non_dumpable() -> bool:
    """Forbid ptrace and /proc access to this process (and the children it forks) by same-uid code."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def connect(path: str, timeout_s: float = 30.0) -> socket.socket:
    """Connect to the host's listening unix socket."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout_s)
    conn.connect(path)
    conn.settimeout(None)
    return conn


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m laimark_pl.sandbox.server", description=__doc__.split("\n")[0])
    parser.add_argument("--connect", required=True, help="host's listening unix socket")
    parser.add_argument("--options", default="{}", help="JSON keyword arguments for ProcessSandbox")
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    if not make_non_dumpable():
        print("sandbox server: cannot make the pool non-dumpable; refusing to run", file=sys.stderr)
        return 2
    from laimark_pl.sandbox.process import ProcessSandbox

    with ProcessSandbox(**options, isolate=False) as sandbox:
        # Connect only after the pool exists, so no worker inherits the host connection.
        conn = connect(args.connect)
        with conn:
            send_frame(conn, {"hello": PROTOCOL_VERSION, "options": options, "python": sys.version})
            serve(sandbox, conn, sweep_between_batches=True)
    return 0


__all__ = [
    "ConnectionClosedError",
    "ProtocolError",
    "encode_frame",
    "handle",
    "main",
    "program_from_dict",
    "program_to_dict",
    "recv_frame",
    "send_frame",
    "serve",
    "sweep",
]

if __name__ == "__main__":
    sys.exit(main())
