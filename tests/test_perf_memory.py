"""The seen ids of 10,000 searches fit a small machine: each search keeps its ids as a
sorted tuple of shared strings (8 bytes an id), not a set (about 35)."""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from alertd.models import SavedSearch, SeenIds
from alertd.store import Store
from alertd.store.files import pack_ids, unpack_ids

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_seen_ids_behave_as_a_set_of_strings() -> None:
    seen = SeenIds(["b", "a", "b"])
    assert seen == {"a", "b"} and len(seen) == 2 and list(seen) == ["a", "b"]
    assert "a" in seen and "c" not in seen and 3 not in seen
    assert seen.update(["c", "a", "d"]) == 2 and seen == {"a", "b", "c", "d"}
    assert seen.discard_all(["a", "x"]) == 1 and seen == {"b", "c", "d"}
    assert {"b"} <= seen and seen >= {"c", "d"}
    assert unpack_ids(pack_ids(seen)) == seen
    odd = SeenIds(["with space", "plain"])  # an id the API would never give: kept whole
    assert unpack_ids(pack_ids(odd)) == odd


def test_a_store_keeps_the_seen_ids_of_2000_searches_in_little_memory(tmp_path: Path) -> None:
    # 2,000 searches, 5 to a query: each has seen the 60 jobs its query lists.
    searches = [SavedSearch(name=f"s{n}", category=f"c{n // 5}") for n in range(2000)]
    with Store.open(tmp_path / "state") as store:
        for search in searches:
            store.prime(search, (f"job{search.category}-{k:03d}" for k in range(60)), NOW)
    gc.collect()
    tracemalloc.start()
    try:
        snapshot = Store.snapshot(tmp_path / "state")
        gc.collect()
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(len(s.seen) for s in snapshot.searches.values()) == 120_000
    # 120,000 seen ids (24,000 distinct strings): 1.7 MiB in all with a tuple per
    # search, 5.0 MiB with a set per search.
    assert held < 3 * 1024 * 1024, f"{held / 2**20:.2f} MiB"
    first = snapshot.searches["s0"].seen
    assert "jobc0-000" in first and "jobc1-000" not in first


def test_a_search_works_out_its_query_and_fingerprint_once() -> None:
    search = SavedSearch(name="a", category="RLHF", language="Spanish")
    first = search.query()
    first["category"] = "changed by a caller"
    assert search.query() == {"category": "RLHF", "language": "Spanish"}
    assert search.fingerprint() == search.fingerprint()
    assert search.__dict__["_fingerprint"] == search.fingerprint()  # kept, not recomputed
    edited = SavedSearch(name="a", category="RLHF", language="German")
    assert edited.fingerprint() != search.fingerprint() and edited != search
