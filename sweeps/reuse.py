"""A table's committed run records as a pool of finished runs: a run whose key the tree gives now
(fresh), or gave before code edits that a certificate shows change no number (certified), is
taken from the records instead of being run again (sweeps/freshness.py decides which).

So a contender entering a committed table runs its own row only, and re-running a table whose
keys moved for some rows runs those rows only. What was taken, and from where, is printed, and
the certificates of the records taken travel with them into the new records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sweeps import freshness, records, spec


@dataclass(frozen=True)
class Pool:
    source: Path | None  # the records file, None when there is none
    by_key: dict = field(default_factory=dict)  # run key now → RunRecord
    certificates: dict = field(default_factory=dict)  # (task, optim) → Certificate

    @classmethod
    def empty(cls) -> "Pool":
        return cls(None)

    @classmethod
    def committed(cls, folder: Path, tables: Path = spec.TABLE_DIR) -> "Pool":
        """The fresh and certified runs of the table rendered in `folder`, by their key now."""
        if not (Path(folder) / records.RECORDS_FILE).exists():
            return cls.empty()
        state = freshness.check(folder, tables=tables)
        tabled = records.read(folder)
        usable = [r for r in state.runs if r.state in (freshness.FRESH, freshness.CERTIFIED)]
        certified = {(r.task, r.optim) for r in usable if r.state == freshness.CERTIFIED}
        return cls(Path(folder) / records.RECORDS_FILE,
                   {r.key_now: tabled.runs[r.index] for r in usable},
                   {(c.task, c.optim): c for c in tabled.certificates
                    if (c.task, c.optim) in certified})

    def certificates_for(self, taken: list[records.RunRecord]) -> tuple:
        """The certificates the records taken rest on."""
        pairs = {(str(r.get("task")), str(r.get("optim"))) for r in taken}
        return tuple(c for pair, c in sorted(self.certificates.items()) if pair in pairs)
