"""The fuzz corpus is deterministic and varied (built without sending it anywhere)."""

from __future__ import annotations

import collections

from tests.fuzz_corpus import MIN_FRAMES, build_corpus


def test_corpus_is_deterministic_and_varied() -> None:
    first = build_corpus()
    second = build_corpus()
    assert [f.data for f in first] == [f.data for f in second]
    assert len(first) >= MIN_FRAMES
    roles = collections.Counter(f.role for f in first)
    assert roles["command"] > 800 and roles["cancel"] > 50 and roles["other"] > 1000
    assert sum(isinstance(f.data, bytes) for f in first) > 200
    refs = collections.Counter(f.ref for f in first if f.role == "command")
    assert sum(1 for n in refs.values() if n > 1) > 50  # duplicates
