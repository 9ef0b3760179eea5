"""`--distributions all-permissive`: the license classifier, resolution, a tiny CLI build."""

import importlib.metadata as md

import pytest

import hybrid_jax.data.pycode as pycode
from hybrid_jax.data import open_store
from hybrid_jax.data.cli import main
from hybrid_jax.data.pycode import (ALL_PERMISSIVE, DEFAULT_DISTRIBUTIONS, PycodeSource,
                                    license_of, normalize_name, resolve_all_permissive)

from tests.helpers.data import FakeDist

MIT_TEXT = ("MIT License\n\nCopyright (c) 2019 Someone\n\nPermission is hereby granted, free of "
            "charge ... THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS "
            "OR IMPLIED, for a simple example.")


@pytest.mark.parametrize("fields, ok", [
    (dict(License_Expression="MIT"), True),
    (dict(License_Expression="Apache-2.0 WITH LLVM-exception"), False),  # exception id unknown
    (dict(License_Expression="BSD-3-Clause OR MIT"), True),
    (dict(License_Expression="MPL-2.0 AND MIT"), False),
    (dict(License_Expression="LGPL-2.1-or-later"), False),
    (dict(License_Expression="AGPL-3.0-only"), False),
    (dict(License_Expression="LicenseRef-Proprietary"), False),
    (dict(Classifier=["License :: OSI Approved :: MIT License"]), True),
    (dict(Classifier=["License :: OSI Approved :: Apache Software License"]), True),
    (dict(Classifier=["License :: OSI Approved :: Python Software Foundation License"]), True),
    (dict(Classifier=["License :: OSI Approved :: ISC License (ISCL)"]), True),
    (dict(Classifier=["License :: OSI Approved :: zlib/libpng License"]), True),
    (dict(Classifier=["License :: OSI Approved :: BSD License",
                      "License :: OSI Approved :: GNU General Public License v2 (GPLv2)"]), False),
    (dict(Classifier=["License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)"]), False),
    (dict(Classifier=["License :: Other/Proprietary License"]), False),
    (dict(Classifier=["License :: OSI Approved"], License="BSD"), True),
    (dict(License="Apache License 2.0"), True),
    (dict(License="BSD-3-Clause"), True),
    (dict(License=MIT_TEXT), True),  # "implied"/"simple" are not "mpl"
    (dict(License="MIT License\n\nparts are under the GNU General Public License"), False),
    (dict(License="GPLv3"), False),
    (dict(License="UNKNOWN"), False),
    (dict(License="Copyright (c) Someone. All rights reserved."), False),
    (dict(), False),
])
def test_license_table(fields, ok):
    assert license_of(FakeDist(**fields))[1] is ok


def test_all_permissive_resolves_installed_defaults_and_no_excluded_license():
    names, excluded = resolve_all_permissive()
    assert names == sorted(set(names))
    installed = []
    for name in DEFAULT_DISTRIBUTIONS:
        try:
            md.distribution(name)
        except md.PackageNotFoundError:
            continue
        installed.append(normalize_name(name))
    assert set(installed) <= set(names)
    assert "hybrid-jax" not in names
    project = [e for e in excluded if e["name"] == "hybrid-jax"]
    assert all(e["reason"] == "the project itself" for e in project)
    assert not set(names) & {e["name"] for e in excluded}
    for name in names:
        assert license_of(md.distribution(name))[1], name
    for e in excluded:
        assert e["reason"] and ("license" not in e["reason"] or not license_of(
            md.distribution(e["name"]))[1])


def test_all_permissive_cannot_be_mixed():
    with pytest.raises(ValueError, match="cannot be combined"):
        PycodeSource([ALL_PERMISSIVE, "pyyaml"])


@pytest.mark.filterwarnings("ignore:no held-out documents")
def test_tiny_all_permissive_build(tmp_path, monkeypatch, capsys):
    names, _ = resolve_all_permissive()
    # the smallest non-default distribution goes to the "other" family
    others = [n for n in names if n not in DEFAULT_DISTRIBUTIONS]
    other = min(others, key=lambda n: sum(f.suffix == ".py" for f in md.distribution(n).files))
    excluded = [{"name": "gpl-thing", "version": "1.0", "license": "GPL-3.0-only",
                 "reason": "license not permissive or unknown"},
                {"name": "hybrid-jax", "version": "0.1.0", "license": "x",
                 "reason": "the project itself"}]
    monkeypatch.setattr(pycode, "resolve_all_permissive",
                        lambda: (["cycler", "iniconfig", other], excluded))
    out = tmp_path / "store"
    assert main(["build", "--source", "pycode", "--distributions", ALL_PERMISSIVE,
                 "--tokenizer", "byte", "--out", str(out), "--val-fraction", "0.3"]) == 0
    err = capsys.readouterr().err
    assert "3 distributions included, 2 excluded" in err and "gpl-thing (GPL-3.0-only)" in err
    m = open_store(out).manifest["source"]
    assert m["selection"] == ALL_PERMISSIVE and m["excluded"] == excluded
    dists = {d["name"]: d for d in m["distributions"]}
    assert list(dists) == ["cycler", "iniconfig", other]
    assert dists[other]["family"] == "other" and dists["cycler"]["family"] == "plotting"
    assert all(d["version"] == md.version(n) and d["license"] and d["files"]
               for n, d in dists.items())
    assert set(m["families"]) == {"other", "plotting", "tools"}
