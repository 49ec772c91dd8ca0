from __future__ import annotations

import pytest

from benchmarks.integrity import ExpectedBody, first_difference, normalise


def _chunk(response_id: str, created: int, word: str) -> bytes:
    return (
        b'data: {"id":"%s","object":"chat.completion.chunk","created":%d,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n' % (response_id.encode(), created, word.encode())
    )


def _stream(response_id: str, created: int, words: list[str]) -> bytes:
    return b"".join(_chunk(response_id, created, w) for w in words) + b"data: [DONE]\n\n"


def test_two_answers_to_one_request_compare_equal() -> None:
    a = _stream("chatcmpl-aaa", 1700000000, ["alpha ", "bravo "])
    b = _stream("chatcmpl-bbbbbb", 1800000000, ["alpha ", "bravo "])
    assert a != b
    assert normalise(a) == normalise(b)
    assert ExpectedBody.from_reference(a).matches(b)


@pytest.mark.parametrize(
    "got",
    [
        _stream("chatcmpl-b", 1, ["alpha ", "bravo"]),  # one byte less
        _stream("chatcmpl-b", 1, ["alpha "]),  # a chunk missing
        _stream("chatcmpl-b", 1, ["alpha ", "bravo ", "charlie "]),  # a chunk too many
        _chunk("chatcmpl-b", 1, "alpha ") + _chunk("chatcmpl-OTHER", 1, "bravo ") + b"data: [DONE]\n\n",
        _chunk("chatcmpl-b", 1, "alpha ") + _chunk("chatcmpl-b", 2, "bravo ") + b"data: [DONE]\n\n",
        _stream("chatcmpl-b", 1, ["alpha ", "bravo "]).replace(b"\n\n", b"\r\n\r\n"),
        _stream("chatcmpl-b", 1, ["alpha ", "bravo "])[:-14],  # no [DONE]
    ],
)
def test_any_other_difference_is_a_mismatch(got: bytes) -> None:
    expected = ExpectedBody.from_reference(_stream("chatcmpl-a", 1700000000, ["alpha ", "bravo "]))
    assert not expected.matches(got)


def test_bodies_without_id_or_created_compare_as_they_are() -> None:
    assert normalise(b'{"object":"list"}') == b'{"object":"list"}'
    assert ExpectedBody.from_reference(b"").matches(b"")


def test_first_difference_names_the_offset_and_context() -> None:
    assert first_difference(b"abcdef", b"abcdef") == "identical"
    message = first_difference(b"abcXef", b"abcdef")
    assert message.startswith("byte 3 (got 6 bytes, expected 6)")
    assert "abcXef" in message
    assert first_difference(b"abc", b"abcdef").startswith("byte 3 (got 3 bytes, expected 6)")
