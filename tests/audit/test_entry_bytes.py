"""Audit entries are RFC 8785 JSON, and for every payload the log writes that is byte for byte
what the earlier canonical form gave: old leaves and new ones are one format."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from consentry.audit import AUDIT_EVENT_TYPES, entry_json

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    _TEXT,
    st.lists(_TEXT, max_size=4),
)


def _earlier(payload: dict[str, Any]) -> str:
    """The canonical form audit payloads had before RFC 8785."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@given(
    st.sampled_from(sorted(AUDIT_EVENT_TYPES)).flatmap(
        lambda kind: st.fixed_dictionaries(dict.fromkeys(AUDIT_EVENT_TYPES[kind], _VALUE))
    )
)
def test_every_payload_shape_the_log_writes_is_unchanged(payload: dict[str, Any]) -> None:
    assert entry_json(payload) == _earlier(payload) == rfc8785.dumps(payload).decode()


def test_what_jcs_cannot_represent_is_refused_not_rewritten() -> None:
    with pytest.raises(ValueError, match="RFC 8785"):
        entry_json({"count": 2**53})
    with pytest.raises(ValueError, match="RFC 8785"):
        entry_json({"name": "\ud800"})
