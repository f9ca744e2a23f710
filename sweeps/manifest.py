"""A sweep's record: `<runs_root>/_sweeps/<name>.json`.

It lists the sweep's runs (overrides, run key, run dir) and, per run, the jobs that were
submitted for it (job id, launcher, time). Results themselves live in the run dirs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tasks.train import store

NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")


def check_name(name: str) -> None:
    if not NAME_RULE.match(name or ""):
        raise ValueError(f"sweep name {name!r}: use letters, digits, '_', '-', '.', '=' "
                         f"(it names a file and a W&B group)")


@dataclass
class Manifest:
    path: Path
    name: str
    runs: list[dict] = field(default_factory=list)

    @classmethod
    def load_or_new(cls, runs_root: Path, name: str) -> "Manifest":
        check_name(name)
        path = Path(runs_root) / "_sweeps" / f"{name}.json"
        data = store.read_json(path) or {}
        return cls(path, name, data.get("runs", []))

    @classmethod
    def load(cls, runs_root: Path, name: str) -> "Manifest":
        record = cls.load_or_new(runs_root, name)
        if not record.path.exists():
            known = sorted(p.stem for p in (Path(runs_root) / "_sweeps").glob("*.json"))
            raise FileNotFoundError(f"no sweep {name!r} under {runs_root}; known: {known}")
        return record

    def set_runs(self, runs: list[tuple[list[str], str, str]]) -> None:
        """The sweep's runs, keeping the job history of runs already known."""
        jobs = {r["run_key"]: r.get("jobs", []) for r in self.runs}
        self.runs = [{"overrides": ov, "run_key": key, "run_dir": rdir,
                      "jobs": jobs.get(key, [])} for ov, key, rdir in runs]

    def mark_submitted(self, run_key: str, job_id: str, launcher: str, when: float) -> None:
        for r in self.runs:
            if r["run_key"] == run_key:
                r["jobs"].append({"job_id": job_id, "launcher": launcher, "time": when})

    def last_job(self, run_key: str) -> dict | None:
        for r in self.runs:
            if r["run_key"] == run_key and r.get("jobs"):
                return r["jobs"][-1]
        return None

    def save(self) -> None:
        store.write_json(self.path, {"name": self.name, "runs": self.runs})
