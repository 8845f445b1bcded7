"""The text protocol's multi-get answer parser (``dal.backends.memcached.text.parse_values``) and the
memo of wire keys (``dal.backends.memcached.keys.wire_bytes``): exact on every answer, cut anywhere."""

from __future__ import annotations

import pytest

from dal.backends.memcached import keys
from dal.backends.memcached.text import ProtocolError, parse_values

VALUES = {b"k1": b"plain", b"k2": b"", b"k3": b"with\r\nEND\r\nand VALUE k1 0 3\r\n inside",
          b"k4": b"\x00\xff" * 40}
ANSWER = b"".join(b"VALUE %s %d %d\r\n%s\r\n" % (key, n, len(value), value)
                  for n, (key, value) in enumerate(VALUES.items())) + b"END\r\n"


def parse_in_pieces(answer: bytes, cut: int) -> dict[bytes, bytes]:
    """Parse ``answer`` arriving in two pieces, as ``TextConnection.get_many`` does."""
    found: dict[bytes, bytes] = {}
    position, ended = parse_values(answer[:cut], 0, set(VALUES), found)
    if not ended:
        buffer = answer[:cut][position:] + answer[cut:]
        position, ended = parse_values(buffer, 0, set(VALUES), found)
        assert ended and position == len(buffer)
    else:
        assert cut == len(answer) and position == cut
    return found


@pytest.mark.parametrize("cut", range(len(ANSWER) + 1))
def test_an_answer_cut_anywhere_parses_whole(cut: int) -> None:
    assert parse_in_pieces(ANSWER, cut) == VALUES


def test_what_follows_end_is_left() -> None:
    found: dict[bytes, bytes] = {}
    assert parse_values(b"END\r\nVALUE", 0, set(), found) == (5, True)
    assert parse_values(b"VALUE k1 0 2\r\nab\r\nEND\r\nrest", 0, {b"k1"}, found) == (23, True)
    assert found == {b"k1": b"ab"}


@pytest.mark.parametrize("answer", [
    b"VALUE other 0 2\r\nab\r\nEND\r\n",  # a key not asked for: out of step
    b"VALUE k1 0 x\r\nab\r\nEND\r\n",  # a length that is no number
    b"VALUE k1 0\r\nab\r\nEND\r\n",  # three fields
    b"VALUE k1 0 2 9\r\nab\r\nEND\r\n",  # five
    b"VALUES k1 0 2\r\nab\r\nEND\r\n",
    b"VALUE k1 0 2\r\nabc\r\nEND\r\n",  # no CRLF after the value
    b"ENDX\r\n", b"STORED\r\n", b"\r\n", b"ERROR\r\n",
])
def test_anything_else_is_refused(answer: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_values(answer, 0, {b"k1"}, {})


def test_an_incomplete_line_waits() -> None:
    for partial in (b"", b"EN", b"END\r", b"VALUE k1 0 2", b"VALUE k1 0 2\r\nab", b"VALUE k1 0 2\r\nab\r"):
        assert parse_values(partial, 0, {b"k1"}, {}) == (0, False)


@pytest.mark.parametrize("key", ["plain:key", "with space", "caf\u00e9", "x" * 300, "100%", "a~b", ""])
def test_wire_bytes_is_wire_key_encoded(key: str) -> None:
    assert keys.wire_bytes(key) == keys.wire_key(key).encode()
    assert keys.wire_bytes(key) == keys.wire_key(key).encode()  # from the memo


def test_the_wire_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "WIRE_MEMO", 10)
    monkeypatch.setattr(keys, "_wired", {})
    for n in range(25):
        assert keys.wire_bytes(f"key {n}") == f"key%20{n}".encode()
        assert len(keys._wired) <= 10
    assert keys.wire_bytes("key 0") == b"key%200"
