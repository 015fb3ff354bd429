"""Writing the state costs no lasting memory and no second copy of a file: a member's
sign-up rewrites searches.json (11 MB at 10,000 members) and the members table (7 MB),
and the daemon's peak RSS is what it holds plus what such a write needs at once
(``bench/members.py quiet``)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alertd.models import SavedSearch
from alertd.store import Store
from alertd.store.files import json_pieces, write_atomically

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MIB = 1024 * 1024


def seen_2000(store: Store) -> None:
    """2,000 searches that have each seen 60 jobs, committed: searches.json about 2 MB."""
    for n in range(2000):
        search = SavedSearch(name=f"s{n}", category=f"c{n}")
        store.prime(search, (f"job-{search.name}-{k:03d}" for k in range(60)), NOW)
    store.commit()
    gc.collect()


def test_a_commit_keeps_no_parsed_copy_of_what_it_wrote(tmp_path: Path) -> None:
    with Store.open(tmp_path / "state") as store:
        seen_2000(store)
        tracemalloc.start()
        try:
            store.prime(SavedSearch(name="new", category="x"), ["job-new"], NOW)  # a sign-up
            store.commit()  # searches.json written again
            gc.collect()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert (tmp_path / "state" / "searches.json").stat().st_size > 1_000_000
    # Kept, the written documents were 3.7 MiB (the packed seen ids and every row's dict).
    assert held < MIB // 2, f"{held / MIB:.2f} MiB kept after the commit"
    assert "job-new" in Store.snapshot(tmp_path / "state").searches["new"].seen


def test_a_big_file_is_written_without_a_second_copy_of_it(tmp_path: Path) -> None:
    text = '{"rows":"' + "x" * (8 * MIB) + '"}'
    gc.collect()
    tracemalloc.start()
    try:
        write_atomically(tmp_path / "big.json", text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "big.json").read_text(encoding="utf-8") == text
    # Encoded whole, the text's bytes were one more 8 MiB at the peak.
    assert peak < 3 * MIB, f"{peak / MIB:.2f} MiB at the peak"


def table(rows: int) -> dict[str, Any]:
    """A members table's shape: rows of a few fields, keyed by id."""
    return {
        "format": 1,
        "version": 7,
        "members": {
            f"id{n:06d}": {"email": f"m{n}@example.org", "feed": False, "nonce": "x" * 43}
            for n in range(rows)
        },
        "searches": {},
    }


def test_a_table_of_20000_rows_is_written_without_its_whole_text(tmp_path: Path) -> None:
    data = table(20_000)
    text = json.dumps(data, separators=(",", ":"))  # 2.4 MB
    gc.collect()
    tracemalloc.start()
    try:
        written = write_atomically(tmp_path / "members.json", json_pieces(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "members.json").read_text(encoding="utf-8") == text
    assert written == len(text.encode())
    # As one text: the text and the pieces the encoder joined, 6 MiB at the peak.
    assert peak < MIB, f"{peak / MIB:.2f} MiB at the peak"


@pytest.mark.parametrize("sort_keys", [False, True])
@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"a": {}},
        {"b": 1, "a": {"z": [1, 2.5, None, True], "y": {"k": "v", "é": "ü\u2028"}}},
        {"t": {"2": {"b": 1, "a": 2}, "10": {}, "1": {"x": '"quoted"'}}},
        [1, {"a": 2}],
        "text",
    ],
)
def test_pieces_join_to_exactly_what_json_dumps_writes(doc: Any, sort_keys: bool) -> None:
    whole = json.dumps(doc, separators=(",", ":"), sort_keys=sort_keys)
    for depth in (0, 1, 2, 3):
        assert "".join(json_pieces(doc, sort_keys=sort_keys, depth=depth)) == whole


def test_a_dict_with_other_than_text_keys_is_left_to_json_dumps() -> None:
    doc = {"t": {1: "int key", "1": "str key"}}
    assert "".join(json_pieces(doc, depth=3)) == json.dumps(doc, separators=(",", ":"))


def test_a_commit_makes_searches_documents_a_piece_at_a_time(tmp_path: Path) -> None:
    # The same 2,000 searches: made all at once, their documents were 3.7 MiB at the
    # write's peak on top of what the store holds.
    with Store.open(tmp_path / "state") as store:
        seen_2000(store)
        tracemalloc.start()
        try:
            store.prime(SavedSearch(name="new", category="x"), ["job-new"], NOW)
            store.commit()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    size = (tmp_path / "state" / "searches.json").stat().st_size
    assert size > 1_000_000
    assert peak < size / 2, f"{peak / MIB:.2f} MiB at the peak for a {size / MIB:.2f} MiB file"
    reread = Store.snapshot(tmp_path / "state").searches
    assert len(reread) == 2001 and "job-s1999-059" in reread["s1999"].seen
