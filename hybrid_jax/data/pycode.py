"""The built-in corpus: Python source files of installed, permissively licensed distributions.

Every machine that installs the project already has these files, so the default corpus needs no
network. Files come from each distribution's RECORD (importlib.metadata), in sorted order; the
manifest lists every file with its sha256, and each distribution with its version and license.

Validation sets are per *family* of distributions, so bits-per-byte can be read per domain.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from hybrid_jax.data.sources import Document

# family -> distributions. All are in the core install's dependency closure (or the [test]
# extra: pytest, pluggy, iniconfig), and all are permissively licensed (checked at build time).
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "numeric": ("numpy", "scipy"),
    "plotting": ("matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver", "pillow"),
    "ml": ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-dtypes", "opt-einsum",
           "treescope", "etils", "absl-py", "tensorstore", "msgpack", "sentencepiece", "protobuf"),
    "tools": ("pytest", "pluggy", "iniconfig", "pyyaml", "packaging", "pyparsing",
              "python-dateutil", "rich", "pygments", "markdown-it-py", "mdurl",
              "typing-extensions", "humanize", "psutil", "simplejson", "aiofiles",
              "prometheus-client"),
}
DEFAULT_DISTRIBUTIONS = tuple(d for dists in DEFAULT_FAMILIES.values() for d in dists)
OTHER_FAMILY = "other"

# SPDX ids / classifier names we accept. Anything else, including no license metadata, is refused.
_PERMISSIVE = re.compile(
    r"^(mit|mit-cmu|x11|bsd|bsd-[0-9]-clause|[0-9]-clause bsd|0bsd|apache|apache-2\.0|apache 2\.0|"
    r"apache software|isc|iscl|psf|psf-2\.0|"
    r"python software foundation|python-2\.0|zlib|cc0-1\.0|unlicense|hpnd|afl-2\.1|"
    r"academic free license|historical permission notice and disclaimer|the unlicense)"
    r"( license)?( \(.*\))?$")
_COPYLEFT = re.compile(r"gpl|mpl|mozilla|eupl|epl|cddl|copyleft|affero|sspl|commons clause", re.I)


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def family_of(name: str) -> str:
    name = normalize_name(name)
    for family, dists in DEFAULT_FAMILIES.items():
        if name in dists:
            return family
    return OTHER_FAMILY


def license_of(dist: md.Distribution) -> tuple[str, bool]:
    """(license as recorded, whether it is permissive) from PEP 639 / classifiers / License."""
    meta = dist.metadata
    expression = meta.get("License-Expression")
    if expression:
        return expression, _all_permissive(expression)
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::")]
    classifiers = [c for c in classifiers if c not in ("OSI Approved", "DFSG approved")]
    if classifiers:
        ok = all(_PERMISSIVE.match(c.lower()) for c in classifiers)
        return " / ".join(classifiers), ok
    text = (meta.get("License") or "").strip()
    first = text.splitlines()[0].strip() if text else "UNKNOWN"
    return first, _all_permissive(first) and not _COPYLEFT.search(text)


def _all_permissive(expression: str) -> bool:
    """Every license named in an SPDX-style expression is permissive (OR treated as AND)."""
    ids = [t.strip().lower() for t in re.split(r"\s+(?:and|or|with)\s+|[()]", expression,
                                               flags=re.I) if t.strip()]
    return bool(ids) and all(_PERMISSIVE.match(t) for t in ids)


class LicenseError(ValueError):
    pass


class PycodeSource:
    """Python files of installed distributions; one document per file, group = family."""

    kind = "pycode"

    def __init__(self, distributions: tuple[str, ...] | list[str] = DEFAULT_DISTRIBUTIONS):
        self.distributions: list[dict] = []
        missing, refused = [], []
        for name in distributions:
            try:
                dist = md.distribution(normalize_name(name))
            except md.PackageNotFoundError:
                missing.append(name)
                continue
            license_, ok = license_of(dist)
            if not ok:
                refused.append(f"{name} ({license_})")
            self.distributions.append({
                "name": normalize_name(dist.metadata["Name"]), "version": dist.version,
                "license": license_, "family": family_of(name), "_dist": dist})
        if missing:
            raise ValueError(f"distributions not installed: {', '.join(missing)} "
                             "(install them or pass --distributions with an installed list)")
        if refused:
            raise LicenseError("not permissively licensed, refused for the corpus: "
                               + "; ".join(refused))
        self.groups = sorted({d["family"] for d in self.distributions})
        self.skipped: list[str] = []

    def _files(self, entry: dict) -> list:
        dist = entry["_dist"]
        return sorted((f for f in dist.files or [] if f.suffix == ".py"), key=str)

    def documents(self) -> Iterator[Document]:
        for entry in self.distributions:
            dist, files = entry["_dist"], []
            entry["files"] = files
            for rel in self._files(entry):
                path = dist.locate_file(rel)
                try:
                    raw = Path(path).read_bytes()
                except FileNotFoundError:
                    self.skipped.append(f"{entry['name']}:{rel} (listed in RECORD, missing)")
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.skipped.append(f"{entry['name']}:{rel} (not UTF-8)")
                    continue
                files.append({"path": str(rel), "sha256": hashlib.sha256(raw).hexdigest(),
                              "bytes": len(raw)})
                yield Document(text, entry["family"])

    def describe(self) -> dict:
        dists = [{k: v for k, v in d.items() if not k.startswith("_")} for d in self.distributions]
        return {"kind": self.kind, "distributions": dists, "skipped_files": self.skipped,
                "families": {g: [d["name"] for d in dists if d["family"] == g] for g in self.groups}}


def warn_version_drift(source_description: dict, reference: dict, what: str) -> list[str]:
    """Warn for every distribution whose version differs from `reference` (a manifest's source)."""
    ref = {d["name"]: d["version"] for d in reference.get("distributions", [])}
    now = {d["name"]: d["version"] for d in source_description.get("distributions", [])}
    drift = [f"{n}: {ref[n]} in {what}, {v} installed" for n, v in now.items()
             if n in ref and ref[n] != v]
    drift += [f"{n}: in {what}, not in this build" for n in ref if n not in now]
    drift += [f"{n}: in this build, not in {what}" for n in now if n not in ref]
    for line in drift:
        warnings.warn(f"pycode corpus differs from {what}: {line}", VersionDriftWarning,
                      stacklevel=2)
    return drift


class VersionDriftWarning(UserWarning):
    pass
