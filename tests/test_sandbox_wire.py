"""Plain-data encoding between untrusted children and the trusted side."""

from __future__ import annotations

import json
import math
import os
from collections import Counter, OrderedDict, defaultdict
from decimal import Decimal
from fractions import Fraction

import pytest

from laimark_pl.sandbox.wire import (
    FrameBuffer,
    FrameError,
    NotPlain,
    Unplain,
    decode_value,
    encode_result,
    encode_value,
    pack,
    pack_job,
    pack_report,
    read_frame,
    read_job,
    unpack_report,
    write_frame,
)


def roundtrip(value):
    return decode_value(json.loads(json.dumps(encode_value(value))))


@pytest.mark.parametrize("value", [
    None, True, 0, -7, 2**200, -(2**70), 1.5, -0.0, math.inf, "text \udcff", b"\x00\xff", 3 + 4j,
    [1, [2, (3, {4: {"k": frozenset({5})}})]], (), {(1, 2): [None]}, {1, "a", (2,)},
    Fraction(1, 3), Decimal("-1.10"),
])
def test_plain_values_roundtrip_with_exact_types(value):
    back = roundtrip(value)
    assert back == value and type(back) is type(value)
    if isinstance(value, float) and value == 0:
        assert math.copysign(1, back) == -1


def test_numpy_scalars_become_builtins_but_arrays_do_not():
    np = pytest.importorskip("numpy")
    assert type(roundtrip(np.int64(5))) is int and roundtrip(np.float32(0.5)) == 0.5
    assert roundtrip([np.bool_(True)]) == [True]
    assert isinstance(decode_value(encode_result(np.array([1, 2]))), Unplain)


def test_nan_roundtrips():
    assert math.isnan(roundtrip(float("nan")))


def test_stdlib_mappings_become_dicts_and_iterators_stay_iterators():
    assert type(roundtrip(Counter("aab"))) is dict and roundtrip(Counter("aab")) == {"a": 2, "b": 1}
    assert roundtrip(OrderedDict(a=1)) == {"a": 1} and roundtrip(defaultdict(int, b=2)) == {"b": 2}
    it = roundtrip(x for x in range(3))
    assert it != [0, 1, 2] and list(it) == [0, 1, 2]


class Liar:
    def __eq__(self, other):
        return True


class IntSub(int):
    pass


@pytest.mark.parametrize("value", [Liar(), IntSub(3), [1, IntSub(3)], {"k": Liar()}, object(), print])
def test_non_plain_values_are_rejected_whole(value):
    with pytest.raises(NotPlain):
        encode_value(value)
    marker = decode_value(encode_result(value))
    assert isinstance(marker, Unplain)
    assert marker != marker and not (marker == 3)


def test_self_referencing_list_is_not_plain():
    loop = []
    loop.append(loop)
    assert isinstance(decode_value(encode_result(loop)), Unplain)


@pytest.mark.parametrize("data", [{"t": 5}, {"zz": []}, {"t": [], "s": []}, {"s": [[1]]}, {"b": "xyz"},
                                  {"c": [1, 2]}, {"d": [[[1], 2]]}])
def test_malformed_tagged_data_raises(data):
    with pytest.raises(FrameError):
        decode_value(data)


def test_frames_over_pipes_and_incremental_buffer():
    r, w = os.pipe()
    try:
        write_frame(w, {"code": "x = 1"})
        write_frame(w, ["ok", 2])
        os.close(w)
        assert read_frame(r) == {"code": "x = 1"}
        assert read_frame(r) == ["ok", 2]
        assert read_frame(r) is None
    finally:
        os.close(r)
    data = pack([1]) + pack({"a": 2})
    buf = FrameBuffer()
    assert buf.feed(data[:3]) == [] and buf.feed(data[3:]) == [[1], {"a": 2}] and buf.pending == 0
    with pytest.raises(FrameError):
        FrameBuffer(max_bytes=4).feed(pack("x" * 10))


def test_job_frames_carry_code_objects_and_precede_json_frames():
    code = compile("def f(x):\n    return x + 1", "<solution>", "exec")
    r, w = os.pipe()
    try:
        os.write(w, pack_job({"code": code, "calls": [["f", [1], {"d": []}]]}) + pack(["f", [2], {"d": []}]))
        os.close(w)
        job = read_job(r)
        namespace: dict = {}
        exec(job["code"], namespace)
        assert namespace["f"](1) == 2 and job["calls"] == [["f", [1], {"d": []}]]
        assert read_frame(r) == ["f", [2], {"d": []}]  # the calls that follow are JSON again
        with pytest.raises(FrameError, match="no job"):
            read_job(r)
    finally:
        os.close(r)
    r, w = os.pipe()
    try:
        os.write(w, pack_job([1, 2]))  # type: ignore[arg-type]
        with pytest.raises(FrameError, match="a job is a dict"):
            read_job(r)
    finally:
        os.close(r)
        os.close(w)


def test_worker_reports_round_trip_and_reject_anything_else():
    report = unpack_report(pack_report(-9, None, True, False, 3))
    assert report == {"statuses": {"candidate": -9, "tester": None}, "timed_out": True, "killed": False,
                      "leftovers": 3}
    for bad in (b"", b"kill", b"R 0 - 0 0", b"R x - 0 0 0", b'{"statuses": {}}'):
        with pytest.raises(FrameError):
            unpack_report(bad)
