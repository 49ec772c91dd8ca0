"""Blank text: is_blank and the schema's TEXT_PATTERN agree on what is refused."""

import re

import pytest

from gateway.blank_text import TEXT_PATTERN, is_blank


@pytest.mark.parametrize(("text", "blank"), [
    ("", True), (" ", True), ("\t\n\v\f\r ", True), ("a", False), (" a ", False), ("\u00a0", False),
])  # fmt: skip
def test_only_the_listed_blanks_make_text_blank(text: str, blank: bool) -> None:
    assert is_blank(text) is blank
    assert (re.fullmatch(TEXT_PATTERN, text) is None) is blank
