"""The in-memory post -> author index answers as a plain dict of the snapshot would."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.engine.lake import Lake
from consentry.engine.post_authors import PostAuthors
from tests.factories import posts_table

_ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(
    posts=st.dictionaries(_ids, st.sampled_from(["alice", "berta", "chloe"]), max_size=30),
    probes=st.lists(_ids, max_size=10),
)
def test_author_of_is_the_snapshots_map(
    tmp_path_factory: object, posts: dict[str, str], probes: list[str]
) -> None:
    root: Path = tmp_path_factory.mktemp("lake")  # type: ignore[attr-defined]
    lake = Lake(root)
    index = PostAuthors(lake, recheck_seconds=0)
    assert index.author_of("anything") is None  # no posts table yet
    lake.write_arrow("posts", posts_table(list(posts.items())), rows_per_part=7)
    for post_id in [*posts, *probes, "\x00", "p\x00"]:
        assert index.author_of(post_id) == posts.get(post_id), post_id


def test_current_checks_the_pointer_and_leaves_a_rebuild_to_index(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    index = PostAuthors(lake, recheck_seconds=0)
    empty = index.current()  # no posts table: the empty index is the live one
    assert empty is not None
    assert empty.author_of("p1") is None
    lake.write_arrow("posts", posts_table([("p1", "alice")]))
    assert index.current() is None  # the snapshot moved: a rebuild is due
    assert index.author_of("p1") == "alice"  # `index` rebuilds
    built = index.current()
    assert built is not None
    assert built.author_of("p1") == "alice"
    assert [built.post_id(i) for i in range(len(built))] == ["p1"]
    lake.write_arrow("posts", posts_table([("p2", "berta")]))
    assert index.current() is None
    index.recheck_seconds = 3600  # not due: the index it has, without a look
    assert index.current() is built
    index.recheck_seconds = 0
    assert index.author_of("p2") == "berta"
    assert index.author_of("p1") is None
