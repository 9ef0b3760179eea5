"""benchmarks/gdn_kernel_ablate.py on a CPU host: every ablation still applies to the kernels'
source and builds a module, one of each kernel runs in the Mosaic GPU interpreter through
main(), and bad arguments fail by name. Timings mean nothing here."""

import json

import pytest

from benchmarks import gdn_kernel_ablate as ablate
from tests.helpers.interpret_child import in_child


@pytest.mark.parametrize("kernel,name", [(k, a) for k, (_, table) in ablate.ABLATIONS.items()
                                         for a in table])
def test_every_ablation_applies_once_and_builds(kernel, name):
    module = ablate.variant(kernel, name)
    assert hasattr(module, "prep_fwd" if kernel == "prep_fwd" else "chunk_grads")


def test_an_edit_without_its_match_fails_by_name(monkeypatch):
    path, table = ablate.ABLATIONS["grads"]
    monkeypatch.setitem(ablate.ABLATIONS, "grads",
                        (path, {**table, "stale": [("no such line\n", "")]}))
    with pytest.raises(ValueError, match="ablation 'stale' of grads: 0 matches"):
        ablate.variant("grads", "stale")


@in_child
def test_main_runs_one_ablation_of_each_kernel_in_the_interpreter(tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_CPU_ENABLE_ASYNC_DISPATCH", "0")
    rc = ablate.main(["--interpret", "--shape", "B=1,T=64,H=1,K=64,V=64", "--ablation",
                      "inverse: no rounds", "no phase 2", "--warmup", "0", "--iters", "1",
                      "--inner", "1", "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "gdn_ablate.json").read_text())["rows"]
    assert [(r["kernel"], r["ablation"]) for r in rows] == [
        ("prep_fwd", None), ("prep_fwd", "inverse: no rounds"), ("grads", None),
        ("grads", "no phase 2")]
    assert all(r["median_ms"] > 0 for r in rows)
    assert "| grads | no phase 2 |" in (tmp_path / "gdn_ablate.md").read_text()


@pytest.mark.parametrize("argv,message", [
    (["--ablation", "no such"], "unknown ablation"),
    (["--kernel", "grads", "--shape", "B=1,T=64,H=1,K=64,V=192"], "need V <= 128"),
])
def test_bad_arguments_fail_by_name(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        ablate.main([*argv, "--out", str(tmp_path)])
    assert message in capsys.readouterr().err
