"""The option parsing of `inventiv orgs limits` / `keys limits` (the commands run as processes in test_cli.py)."""

from __future__ import annotations

import argparse

import pytest

from inventiv.organizations import limit_value


@pytest.mark.parametrize(("text", "value"), [("600", 600), ("0", 0), ("none", None), ("None", None)])
def test_limit_value(text: str, value: int | None) -> None:
    assert limit_value(text) == value


@pytest.mark.parametrize(("text", "says"), [("-1", "negative"), ("1.5", "whole number"), ("lots", "whole number")])
def test_limit_value_refuses(text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=says):
        limit_value(text)
