"""Which config file owns which search, when config files share a state directory.

The state keeps each search under one name, for one config file (its owner). A config
file that names a search another one still names would take it over at each run, and
each would prime it again silently: no alert for either. So that is refused, naming
both files. A search whose owner is gone (the file moved, or no longer names it, or no
longer uses this state directory) is handed over as before (``Store.adopt``).
"""

from __future__ import annotations

from pathlib import Path

from alertd.config import Config, load_config
from alertd.errors import ConfigError
from alertd.store import Store


def refuse_shared_names(config: Config, store: Store) -> None:
    """ConfigError naming the first search of ``config`` that another config file sharing
    ``store``'s state directory still names, and that file; nothing when there is none."""
    owner = config.owner or config.source
    held = store.kept_for_others((s.name for s in config.searches), owner)
    names: dict[str, set[str] | None] = {}
    clashes = [(name, other) for name, other in held.items() if _names(other, config, names, name)]
    if not clashes:
        return
    name, other = clashes[0]
    index = next(i for i, s in enumerate(config.searches) if s.name == name)
    more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
    raise config.search_error(
        index,
        f"search {name!r}{more} is also a search of {other}, which shares the state "
        f"directory {config.state_dir}; a state directory holds each search name once: "
        "rename it in one of the two files, or give one of them its own state_dir",
        "name",
    )


def _names(other: str, config: Config, cache: dict[str, set[str] | None], name: str) -> bool:
    """Whether the config file ``other`` still names the search ``name`` and still uses
    ``config``'s state directory; a file that cannot be read claims nothing."""
    if other not in cache:
        try:
            theirs = load_config(Path(other), need_secrets=False)
        except ConfigError:
            cache[other] = None
        else:
            same = theirs.state_dir.resolve() == config.state_dir.resolve()
            cache[other] = {s.name for s in theirs.searches} if same else None
    found = cache[other]
    return found is not None and name in found
