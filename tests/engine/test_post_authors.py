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
