"""The public signals' answer cache and the journal of consent changes it follows: reuse
until the deadline, the size bound, and every change this process notes dropping what it
concerns."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from consentry.ledger.changes import ConsentChanges
from consentry.ledger.signals import AuthorSignals, site_default_signals
from consentry.serving.signals_cache import SignalsCache

SIGNALS = site_default_signals()
OTHER = AuthorSignals(content_usage="train-ai=y", aipref={"train-ai": "y"}, intents={},
                      tdm_reservation=0)  # fmt: skip


def _cache(max_entries: int = 100) -> tuple[SignalsCache, ConsentChanges]:
    changes = ConsentChanges(keep=4)
    return SignalsCache(max_entries=max_entries, changes=changes), changes


def test_an_entry_is_reused_until_its_deadline() -> None:
    cache, _ = _cache()
    mark = cache.mark()
    entry = cache.put("alice", SIGNALS, 300, 0.2, mark=mark)
    assert entry.expires == mark.at + 0.2
    assert entry.max_age == 300
    assert cache.get("alice") == entry
    assert cache.get("bob") is None
    time.sleep(max(0.0, entry.expires - time.monotonic()) + 0.01)
    assert cache.get("alice") is None
    assert len(cache) == 0


def test_nothing_is_kept_without_reuse() -> None:
    cache, _ = _cache()
    entry = cache.put("alice", SIGNALS, 0, 0.0, mark=cache.mark())
    assert entry.signals == SIGNALS
    assert cache.get("alice") is None


def test_the_least_recently_used_go_first() -> None:
    cache, _ = _cache(max_entries=2)
    for author in ("a", "b"):
        cache.put(author, SIGNALS, 300, 60, mark=cache.mark())
    assert cache.get("a") is not None  # b is now the least recently used
    cache.put("c", SIGNALS, 300, 60, mark=cache.mark())
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None


def test_noted_changes_drop_their_authors() -> None:
    cache, changes = _cache()
    for author in ("alice", "bob", None):
        cache.put(author, SIGNALS, 300, 60, mark=cache.mark())
    changes.note(["alice"])
    assert cache.get("alice") is None
    assert cache.get("bob") is not None
    assert cache.get(None) is not None
    changes.note(None)  # anyone
    assert cache.get("bob") is None
    assert cache.get(None) is None


def test_a_read_overtaken_by_a_change_is_not_kept() -> None:
    cache, changes = _cache()
    mark = cache.mark()
    changes.note(["alice"])  # committed while alice's signals were being read
    stale = cache.put("alice", SIGNALS, 300, 60, mark=mark)
    assert stale.signals == SIGNALS
    assert cache.get("alice") is None
    # Another author's read is not concerned by that change.
    cache.put("bob", SIGNALS, 300, 60, mark=mark)
    assert cache.get("bob") is not None
    # A read after the change is kept.
    fresh = cache.put("alice", OTHER, 300, 60, mark=cache.mark())
    assert cache.get("alice") == fresh


def test_the_journal_says_who_changed_since_a_position() -> None:
    changes = ConsentChanges(keep=3)
    start = changes.position
    assert changes.since(start) == (start, frozenset())
    changes.note(["a"])
    changes.note(iter(["b", "c"]))
    assert changes.since(start) == (start + 2, frozenset({"a", "b", "c"}))
    assert changes.since(start + 1) == (start + 2, frozenset({"b", "c"}))
    changes.note(None)
    assert changes.since(start + 2) == (start + 3, None)
    changes.note(["d"])
    # It keeps 3 notes: the first is gone, so a reader from `start` must drop everything.
    assert changes.since(start) == (start + 4, None)
    assert changes.since(start + 3) == (start + 4, frozenset({"d"}))


@given(st.lists(st.one_of(st.none(), st.frozensets(st.sampled_from("abcde"), max_size=3))))
def test_since_names_every_author_noted_after_the_position(
    notes: list[frozenset[str] | None],
) -> None:
    changes = ConsentChanges(keep=len(notes) + 1)
    for who in notes:
        changes.note(who)
    for position in range(len(notes) + 1):
        current, changed = changes.since(position)
        assert current == len(notes)
        later = notes[position:]
        named = [who for who in later if who is not None]
        if len(named) < len(later):
            assert changed is None
        else:
            assert changed == frozenset[str]().union(*named)
