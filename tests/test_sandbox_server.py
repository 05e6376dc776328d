"""The in-container server's framing and request handling, over a real socket pair and a real pool."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from laimark_pl.sandbox.server import (
    FRAME_HEADER,
    ConnectionClosedError,
    ProtocolError,
    encode_frame,
    handle,
    make_non_dumpable,
    program_from_dict,
    recv_frame,
    send_frame,
    serve,
    sweep,
)
from laimark_pl.sandbox.types import Program, program_to_dict, verdict_from_dict


@pytest.fixture
def pair():
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()


@pytest.fixture(scope="module")
def pool():
    from laimark_pl.sandbox.process import ProcessSandbox

    with ProcessSandbox(workers=2, timeout_s=3.0, memory_mb=256, isolate=False) as sandbox:
        yield sandbox


def test_frames_roundtrip_unicode_and_lone_surrogates(pair):
    left, right = pair
    message = {"code": "x = '\u00e9\u4e2d\U0001f600'\n# \udcff\udc80", "n": [1, 2.5, None, True]}
    send_frame(left, message)
    assert recv_frame(right) == message


def test_large_frame_crosses_in_pieces(pair):
    left, right = pair
    message = {"code": "#" * (5 << 20)}
    sender = threading.Thread(target=send_frame, args=(left, message))
    sender.start()
    assert recv_frame(right) == message
    sender.join()


def test_eof_and_truncated_frames_raise_connection_closed(pair):
    left, right = pair
    left.sendall(encode_frame({"a": 1})[:-3])
    left.close()
    with pytest.raises(ConnectionClosedError, match="after"):
        recv_frame(right)


def test_non_json_and_non_object_frames_are_protocol_errors(pair):
    left, right = pair
    left.sendall(FRAME_HEADER.pack(3) + b"{x]")
    with pytest.raises(ProtocolError, match="not JSON"):
        recv_frame(right)
    left.sendall(encode_frame([1, 2]))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="expected an object"):
        recv_frame(right)


def test_recv_gives_up_at_the_deadline(pair):
    _, right = pair
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        recv_frame(right, deadline=time.monotonic() + 0.3)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"code": b"x", "tests": "assert 1"}, "'code'"),
        ({"code": "x = 1", "tests": None}, "'tests'"),
        ({"code": "x = 1", "tests": "assert x", "entry_point": 3}, "'entry_point'"),
        (["not", "a", "dict"], "expected an object"),
    ],
)
def test_program_from_dict_names_the_bad_field(data, field):
    with pytest.raises(ValueError, match=field):
        program_from_dict(data)


def test_program_from_dict_inverts_program_to_dict():
    program = Program(code="def f(x):\n    return x", tests="def check(c):\n    assert c(1) == 1", entry_point="f")
    assert program_from_dict(program_to_dict(program)) == program


def test_handle_judges_in_order_and_reports_bad_items(pool):
    good = program_to_dict(Program(code="def f(x):\n    return x + 1", tests="assert f(1) == 2"))
    wrong = program_to_dict(Program(code="def f(x):\n    return x", tests="assert f(1) == 2"))
    reply = handle(pool, {"op": "check", "programs": [good, {"code": 1}, wrong]})
    assert reply["ok"] is True
    verdicts = [verdict_from_dict(v) for v in reply["verdicts"]]
    assert [v.passed for v in verdicts] == [True, False, False]
    assert verdicts[1].status == "error" and "'code'" in verdicts[1].detail
    assert verdicts[2].status == "failed"


def test_handle_rejects_unknown_ops_and_malformed_batches(pool):
    assert handle(pool, {"op": "ping"}) == {"ok": True}
    assert handle(pool, {"op": "exec", "code": "x"}) == {"ok": False, "error": "unknown op 'exec'"}
    assert handle(pool, {"op": "check", "programs": "nope"})["ok"] is False


def test_serve_answers_until_the_host_hangs_up(pool, pair):
    host, server_side = pair
    thread = threading.Thread(target=serve, args=(pool, server_side), daemon=True)
    thread.start()
    send_frame(host, {"op": "ping"})
    assert recv_frame(host, deadline=time.monotonic() + 10) == {"ok": True}
    send_frame(
        host,
        {"op": "check", "programs": [program_to_dict(Program(code="def g():\n    return 2", tests="assert g() == 2"))]},
    )
    reply = recv_frame(host, deadline=time.monotonic() + 30)
    assert reply["verdicts"][0]["passed"] is True
    host.sendall(FRAME_HEADER.pack(2) + b"[]")  # a malformed request is answered, not fatal
    assert recv_frame(host, deadline=time.monotonic() + 10)["ok"] is False
    send_frame(host, {"op": "ping"})
    assert recv_frame(host, deadline=time.monotonic() + 10) == {"ok": True}
    host.shutdown(socket.SHUT_WR)
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_make_non_dumpable_clears_the_dumpable_flag():
    import ctypes
    import multiprocessing

    def child(queue):
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: start dumpable (a pool in this process may have cleared it)
        before = prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        ok = make_non_dumpable()
        queue.put((before, ok, prctl(3, 0, 0, 0, 0)))

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    process = ctx.Process(target=child, args=(queue,))
    process.start()
    before, ok, after = queue.get(timeout=10)
    process.join(timeout=10)
    assert (before, ok, after) == (1, True, 0)


def test_sweep_empties_worker_dirs_and_removes_everything_else(tmp_path):
    tmp, shm = tmp_path / "tmp", tmp_path / "shm"
    worker = tmp / "laimark-sandbox-0-abc123"
    (worker / "nested").mkdir(parents=True)
    (worker / "nested" / "planted.txt").write_text("x")
    locked = tmp / "locked"
    (locked / "inner").mkdir(parents=True)
    (locked / "inner" / "f").write_text("x")
    (locked / "inner").chmod(0)
    (tmp / "link").symlink_to("/etc/passwd")
    shm.mkdir()
    (shm / "segment").write_bytes(b"\0" * 10)
    problems = sweep(set(), roots=[str(tmp), str(shm), str(tmp_path / "missing")])
    assert problems == []
    assert sorted(p.name for p in tmp.iterdir()) == [worker.name]
    assert list(worker.iterdir()) == [] and list(shm.iterdir()) == []
