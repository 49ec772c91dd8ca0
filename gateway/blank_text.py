"""Blank text: what the control API and the inference path both refuse as a name (a model, a key name).

The data plane checks a model name with it; the control API's checks and its OpenAPI pattern use the same.
"""

from __future__ import annotations

import re

# Text is refused when it holds only these blanks, or a NUL. The set is spelt out rather than `\s`, which
# means different characters in Python and in the ECMA-262 regexes of JSON Schema; TEXT_PATTERN says the
# same in the schema: https://json-schema.org/draft/2020-12/json-schema-core#section-6.4
_BLANKS = r"\t\n\v\f\r "
_VISIBLE = re.compile(f"[^{_BLANKS}]")
TEXT_PATTERN = rf"^[^\u0000]*[^\u0000{_BLANKS}][^\u0000]*$"


def is_blank(value: str) -> bool:
    return _VISIBLE.search(value) is None
