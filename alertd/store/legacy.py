"""Reading a state written by alertd 0.1 (one ``alertd.json``) into today's layout."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alertd.errors import StoreError
from alertd.models import DeliveryStatus, Event, Job, SearchState, SeenIds, parse_time
from alertd.store.files import read_json_file, row_from_doc

if TYPE_CHECKING:
    from alertd.store import Store

log = logging.getLogger(__name__)

LEGACY_FILE = "alertd.json"  # alertd 0.1's single file, migrated on first open


def migrate_legacy(store: Store, legacy: Path) -> None:
    """Turn alertd 0.1's ``alertd.json`` into this layout, losing and repeating nothing.

    The new files are written first and the old file renamed last, so a crash during
    the migration just runs it again at the next start.
    """
    data = read_json_file(legacy) or {}
    meta = list((data.get("meta") or {}).values())
    version = meta[0].get("schema_version") if meta else 1
    if version != 1:
        raise StoreError(
            f"state file {legacy} has schema version {version}, this alertd migrates "
            "version 1; run the alertd version that wrote it"
        )
    epoch = parse_time("1970-01-01T00:00:00Z")
    assert epoch is not None
    until = parse_time(meta[0].get("changes_until")) if meta else None
    seen = {
        str(doc["search"]): {str(i) for i in doc.get("ids") or ()}
        for doc in (data.get("seen") or {}).values()
    }
    for doc in (data.get("searches") or {}).values():
        name = str(doc["name"])
        since = parse_time(doc.get("priming_since")) or parse_time(doc.get("primed_at"))
        store.searches[name] = SearchState(
            name=name,
            fingerprint=str(doc.get("fingerprint", "")),
            owner=str(doc.get("config") or ""),
            since=since or epoch,
            primed=bool(doc.get("primed")),
            seen=SeenIds(seen.get(name, ())),
        )
    if until is not None:  # 0.1 read the feed once for every config in the directory
        for owner in {s.owner for s in store.searches.values()} or {""}:
            store.positions[owner] = until
    for doc in (data.get("outbox") or {}).values():
        _migrate_row(store, doc, epoch)
    store.rewrite()
    os.replace(legacy, legacy.with_name(LEGACY_FILE + ".migrated"))
    log.info(
        "state migrated to the new layout: %d searches, %d owed, %d delivered; "
        "the old file is kept as %s.migrated",
        len(store.searches),
        len(store.owed),
        len(store.done),
        LEGACY_FILE,
    )


def _migrate_row(store: Store, doc: Mapping[str, Any], epoch: datetime) -> None:
    status = str(doc.get("status"))
    job = doc.get("job")
    record: Mapping[str, Any] = job if isinstance(job, dict) else {"id": doc["job_id"]}
    base = row_from_doc(
        {**doc, "status": DeliveryStatus.PENDING.value, "title": record.get("title")}, epoch
    )
    if status in (DeliveryStatus.SENT, DeliveryStatus.WITHDRAWN):
        done_at = parse_time(doc.get("sent_at")) or parse_time(doc.get("withdrawn_at"))
        store.done[base.key] = replace(
            base, status=DeliveryStatus(status), done_at=done_at or base.created_at
        )
        return
    store.jobs[base.job_id] = Job.from_record(record)
    held = parse_time(doc.get("check_after"))
    if held is not None:  # held for a closure check: read the job again before sending
        since = parse_time(doc.get("held_since")) or held
        base = replace(base, status=DeliveryStatus.HELD, held_since=since)
        event = Event(base.job_id, "UPDATED", held, since)
        first = store.searches.get(base.searches[0]) if base.searches else None
        store.events.setdefault(first.owner if first else "", {})[base.job_id] = event
    store.owed[base.key] = base
