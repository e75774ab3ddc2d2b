"""The backfill's input reader: NDJSON, gzip (one member or several, damaged), JSON arrays; hostile bytes."""

from __future__ import annotations

import gzip
import io
import json
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segment_qualtrics.tools.backfill_input import InputError, Position, _Gunzip, open_input, records

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
flat_objects = st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=12), max_size=4)
# Generation takes longer on a loaded machine; the inputs stay small, so only the health check is relaxed.
RELAXED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
blank = st.sampled_from(["", " ", "\n", "\t", "\r\n", "  \n "])


def read_all(data: bytes, max_bytes: int = 1_000_000, position: Position | None = None) -> list:
    return list(records(io.BufferedReader(io.BytesIO(data)), max_bytes, position))


@settings(**RELAXED)
@given(st.lists(objects, max_size=20), st.data())
def test_ndjson_gives_each_object_back_with_its_line_number(events, data):
    lines = [json.dumps(e, ensure_ascii=data.draw(st.booleans())) for e in events]
    text = "\n".join(lines) + data.draw(st.sampled_from(["", "\n", "\r\n"]))
    got = read_all(text.encode())
    assert [json.loads(r.data) for r in got] == events
    assert [r.number for r in got] == list(range(1, len(events) + 1))


@settings(**RELAXED)
@given(st.lists(json_values, max_size=20), blank, blank)
def test_a_json_array_gives_each_element_back_whatever_it_holds(elements, before, between):
    text = before + "[" + between + ("," + between).join(json.dumps(e) for e in elements) + between + "]" + before
    got = read_all(text.encode())
    assert [json.loads(r.data) for r in got] == elements
    assert all(r.problem is None for r in got)


@settings(max_examples=60, **RELAXED)
@given(st.lists(flat_objects, min_size=1, max_size=12), st.booleans(), st.data())
def test_reading_again_from_any_records_end_gives_the_same_rest(events, as_array, data):
    text = ("[" + ",\n".join(map(json.dumps, events)) + "]") if as_array else "\n".join(map(json.dumps, events))
    whole = read_all(text.encode())
    cut = data.draw(st.integers(0, len(whole) - 1))
    position = Position(whole[cut].number, whole[cut].end, as_array)
    assert read_all(text.encode(), position=position) == whole[cut + 1:]


@settings(max_examples=300, **RELAXED)
@given(st.binary(max_size=2000), st.integers(1, 300))
def test_any_bytes_give_records_or_problems_never_a_crash(data, max_bytes):
    position = Position()
    got = read_all(data, max_bytes, position)
    numbers = [r.number for r in got]
    assert numbers == sorted(set(numbers))
    assert all((r.data is None) == (r.problem is not None) for r in got)
    assert all(len(r.data) <= max_bytes for r in got if r.data is not None)
    ends = [r.end for r in got]
    assert ends == sorted(ends) and all(end <= len(data) for end in ends)


@settings(max_examples=300, **RELAXED)
@given(st.lists(st.binary(min_size=0, max_size=40).filter(lambda b: b"\n" not in b), max_size=10), st.data())
def test_bytes_that_look_like_json_structure_never_hang_or_crash(parts, data):
    alphabet = st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b",", b" ", b"\n", b"1"])
    noise = b"".join(data.draw(st.lists(alphabet, max_size=60)))
    for text in (b"[" + noise, noise, b"".join(parts) + noise):
        read_all(text, 50)


def test_a_line_longer_than_the_limit_is_reported_without_being_kept():
    data = b'{"a":1}\n' + b"x" * 5_000_000 + b'\n{"b":2}\n'
    got = read_all(data, max_bytes=1000)
    assert [(r.number, r.data, r.problem) for r in got] == [
        (1, b'{"a":1}', None), (2, None, "the line is 5000001 bytes; the limit is 1000"), (3, b'{"b":2}', None)]


def test_an_array_element_longer_than_the_limit_is_reported_and_the_next_one_read():
    data = b'[{"a":"' + b"y" * 300_000 + b'"}, {"b": 2}]'
    got = read_all(data, max_bytes=1000)
    assert got[0].data is None and "the limit is 1000" in got[0].problem
    assert (got[1].number, got[1].data) == (2, b'{"b": 2}')


def test_a_deep_array_element_is_cut_out_without_recursion():
    deep = b"[" * 200_000 + b"]" * 200_000
    got = read_all(b"[" + deep + b", {}]", max_bytes=1_000_000)
    assert [r.data for r in got] == [deep, b"{}"]


def test_an_unclosed_array_ends_with_a_problem():
    got = read_all(b'[{"a": 1}, {"b": ')
    assert got[0].data == b'{"a": 1}' and "not closed" in got[1].problem


def test_a_utf8_bom_is_skipped():
    assert [r.data for r in read_all(b'\xef\xbb\xbf{"a":1}\n{"b":2}')] == [b'{"a":1}', b'{"b":2}']
    assert [r.data for r in read_all(b'\xef\xbb\xbf [{"a":1}]')] == [b'{"a":1}']


@settings(max_examples=100, **RELAXED)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=4), st.integers(1, 9))
def test_gzip_of_several_members_reads_as_their_concatenation(members, level):
    data = b"".join(gzip.compress(m, compresslevel=level) for m in members)
    stream = io.BufferedReader(_Gunzip(io.BytesIO(data)), 1024)
    assert stream.read() == b"".join(members)


def test_a_truncated_gzip_gives_its_lines_before_the_damage_then_input_error(tmp_path):
    lines = b"".join(b'{"n":%d}\n' % n for n in range(50_000))
    data = gzip.compress(lines)
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    stream, raw = open_input(str(path))
    got = []
    with pytest.raises(InputError, match="gzip stream is corrupt after record"):
        for record in records(stream, 1000):
            got.append(record)
    assert len(got) > 10_000
    assert [json.loads(r.data)["n"] for r in got] == list(range(len(got)))
    raw.close()


def test_garbage_inside_a_gzip_stream_is_an_input_error(tmp_path):
    data = bytearray(gzip.compress(b'{"a":1}\n' * 10_000))
    data[len(data) // 2: len(data) // 2 + 20] = b"\xff" * 20
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(data))
    stream, raw = open_input(str(path))
    with pytest.raises(InputError):
        list(records(stream, 1000))
    raw.close()


def test_a_gzip_bomb_streams_in_bounded_steps():
    bomb = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    data = bomb.compress(b"\n" * 2_000_000) + bomb.flush()
    stream = _Gunzip(io.BytesIO(data))
    buffer = bytearray(4096)
    assert stream.readinto(buffer) <= 4096
    assert sum(1 for _ in records(io.BufferedReader(_Gunzip(io.BytesIO(data))), 100)) == 0
