"""The built-in corpus: Python source files of installed, permissively licensed distributions.

Every machine that installs the project already has these files, so the default corpus needs no
network. Files come from each distribution's RECORD (importlib.metadata), in sorted order; the
manifest lists every file with its sha256, and each distribution with its version and license.

Validation sets are per *family* of distributions, so bits-per-byte can be read per domain.
The corpus's text is that of the installed versions: `make install` pins the default families'
distributions (corpus_versions.txt beside this file, pip constraints), so a fresh machine reads
the same corpus and `make demo` gives the same numbers.

`--distributions all-permissive` (ALL_PERMISSIVE) is the larger offline corpus: every distribution
installed in the running environment whose license metadata is permissive, in sorted name order.
Built on the GPU machine (or in a bigger venv) it takes that environment's site-packages, so record
which environment the store came from; the manifest lists each distribution, version and license,
and `excluded` names every distribution left out and why. Accepted: MIT, BSD, Apache, ISC, PSF,
Zlib, CC0, Unlicense, HPND, AFL (the _PERMISSIVE list). Refused: GPL/LGPL/AGPL and MPL (file-level
copyleft), proprietary/other, and anything whose license cannot be read from License-Expression,
the "License ::" classifiers, or the first line of License. The project itself is never included.
Distributions outside DEFAULT_FAMILIES go to the "other" validation set.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from hybrid_jax.data.document import Document

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
ALL_PERMISSIVE = "all-permissive"
PROJECT_DISTRIBUTION = "hybrid-jax"

# SPDX ids / classifier names we accept. Anything else, including no license metadata, is refused.
_PERMISSIVE = re.compile(
    r"^(mit|mit-cmu|x11|bsd|bsd-[0-9]-clause|[0-9]-clause bsd|0bsd|apache|apache-2\.0|apache 2\.0|"
    r"apache software|isc|iscl|psf|psf-2\.0|"
    r"python software foundation|python-2\.0|zlib|zlib/libpng|cc0-1\.0|unlicense|hpnd|afl-2\.1|"
    r"academic free license|historical permission notice and disclaimer|the unlicense)"
    r"( license)?( v?[0-9][0-9.]*)?( \(.*\))?$")
# Searched in the whole License text; word boundaries, so "implied" or "simple" is not "mpl".
_COPYLEFT = re.compile(r"\b(?:[la]?gpl(?:v?[0-9][0-9.]*)?|mpl|eupl|epl|cddl|sspl)\b|mozilla|"
                       r"copyleft|affero|general public license|commons clause", re.I)


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


def resolve_all_permissive() -> tuple[list[str], list[dict]]:
    """(names, excluded): every installed permissive distribution with .py files, sorted by name.

    `excluded` holds {"name", "version", "license", "reason"} for each one left out. Where a name is
    installed twice, the first on sys.path is the one importlib.metadata.distribution() returns,
    and the only one considered.
    """
    seen, names, excluded = set(), [], []
    for dist in md.distributions():
        raw_name = dist.metadata["Name"]
        if not raw_name:
            continue
        name = normalize_name(raw_name)
        if name in seen:
            continue
        seen.add(name)
        license_, ok = license_of(dist)
        reason = None
        if name == PROJECT_DISTRIBUTION:
            reason = "the project itself"
        elif not ok:
            reason = "license not permissive or unknown"
        elif not any(f.suffix == ".py" for f in dist.files or []):
            reason = "no .py files in RECORD"
        if reason:
            excluded.append({"name": name, "version": dist.version, "license": license_,
                             "reason": reason})
        else:
            names.append(name)
    return sorted(names), sorted(excluded, key=lambda e: e["name"])


def exclusion_summary(included: int, excluded: list[dict]) -> str:
    """A few lines: how many distributions were taken, and each one left out with its reason."""
    lines = [f"pycode {ALL_PERMISSIVE}: {included} distributions included, "
             f"{len(excluded)} excluded"]
    for reason in sorted({e["reason"] for e in excluded}):
        items = [f"{e['name']} ({e['license']})" if e["reason"].startswith("license") else e["name"]
                 for e in excluded if e["reason"] == reason]
        lines.append(f"  {reason} [{len(items)}]: " + ", ".join(items))
    return "\n".join(lines)


class PycodeSource:
    """Python files of installed distributions; one document per file, group = family."""

    kind = "pycode"

    def __init__(self, distributions: tuple[str, ...] | list[str] = DEFAULT_DISTRIBUTIONS):
        self.distributions: list[dict] = []
        self.excluded: list[dict] | None = None  # set for ALL_PERMISSIVE only
        if ALL_PERMISSIVE in distributions:
            if len(distributions) != 1:
                raise ValueError(f"{ALL_PERMISSIVE} cannot be combined with other distributions")
            distributions, self.excluded = resolve_all_permissive()
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
        out = {"kind": self.kind, "distributions": dists, "skipped_files": self.skipped,
               "families": {g: [d["name"] for d in dists if d["family"] == g] for g in self.groups}}
        if self.excluded is not None:
            out["selection"] = ALL_PERMISSIVE
            out["excluded"] = self.excluded
        return out


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
