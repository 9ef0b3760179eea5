"""A ladder expanded under one root directory, local or gs://: its runs, their state (done,
failed, refused, running, pending), spec.json, and the rows in results.d with their export
results.jsonl (layout: state.py). The runner (runner.py), `sweep status` and `sweep merge`
work on it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from etils import epath

from hybrid_jax.storage import results
from hybrid_jax.storage.claims import Claim
from hybrid_jax.storage.paths import as_path, is_object_store
from hybrid_jax.sweep.ladder import Ladder, RunSpec
from hybrid_jax.sweep.state import read_json, write_json


class Sweep:
    """A ladder expanded under one root directory."""

    def __init__(self, ladder: Ladder, root: str | os.PathLike | None = None,
                 only: list[str] | None = None, stale_after: float = 600.0):
        self.ladder = ladder
        root = root if root is not None else Path("sweeps") / ladder.name
        self.remote = is_object_store(root)
        self.root = as_path(root)
        self.runs, self.invalid = ladder.expand(self.root, only)
        self.results = self.root / "results.jsonl"
        self.stale_after = stale_after

    def lock(self, spec: RunSpec) -> Claim:
        return Claim(spec.run_dir, stale_after=self.stale_after)

    def spec_path(self, spec: RunSpec) -> epath.Path:
        return spec.run_dir / "spec.json"

    @property
    def local_dir(self) -> Path:
        """Where this host keeps what cannot live on the root: for a gs:// root, workers' logs
        while they run and the JAX compilation cache, in ~/.cache/hybrid-jax/sweeps/; for a
        local root, the root itself."""
        if not self.remote:
            return Path(self.root)
        key = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path.home() / ".cache" / "hybrid-jax" / "sweeps" / f"{self.ladder.name}-{key}"

    def log_path(self, spec: RunSpec) -> Path:
        return self.local_dir / "runs" / spec.run_id / "worker.log"

    def prepare(self) -> None:
        """Run directories with spec.json; rows of done runs restored if results.d lost them."""
        for spec in self.runs:
            if not self.remote:
                spec.run_dir.mkdir(parents=True, exist_ok=True)
            if read_json(self.spec_path(spec)) != spec.to_json():
                write_json(self.spec_path(spec), spec.to_json())
            done = read_json(spec.run_dir / "done.json")
            if done:
                results.append_rows(self.root, done["rows"])
        self.export_results()

    def export_results(self) -> int:
        """Rewrite results.jsonl from results.d; returns the number of rows."""
        return results.export_jsonl(self.root, self.results)

    def state(self, spec: RunSpec) -> str:
        """done | failed | refused | running | pending."""
        if (spec.run_dir / "done.json").exists():
            return "done"
        failed = read_json(spec.run_dir / "failed.json")
        if failed:
            return "refused" if failed.get("kind") == "refused" else "failed"
        if self.lock(spec).holder() is not None:
            return "running"
        return "pending"
