"""The streaming export reader (issue 16 case 8) reads what json.loads reads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circle.crdt.exportscan import Rows, scan

LAZY = frozenset({"needs", "tools"})
scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)


def plain(value: Any) -> Any:
    if isinstance(value, Rows):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@settings(max_examples=150, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["needs", "tools", "format", "x"]), values, max_size=4)
       | values, indent=st.sampled_from([None, 0, 2]))
def test_same_as_json_loads(doc: Any, indent: int | None) -> None:
    text = json.dumps(doc, indent=indent)
    assert plain(scan(text, LAZY)) == json.loads(text)


def test_records_are_decoded_one_at_a_time() -> None:
    text = json.dumps({"format": "circle-export", "needs": [{"id": "a"}, {"id": "b"}], "tools": []})
    data = scan(text, LAZY)
    assert isinstance(data["needs"], Rows) and len(data["needs"]) == 2
    assert data["needs"][1] == {"id": "b"} and len(data["tools"]) == 0


@pytest.mark.parametrize("text", ['{"needs": [1, 2', '{"needs": [1 2]}', '{"a": 1} x', '', '{"a" 1}',
                                  '{"needs": [{"id": }]}', '{"a": 1,}', '[1,]'])
def test_invalid_json_is_a_decode_error_with_a_position(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        scan(text, LAZY)
