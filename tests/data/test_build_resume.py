"""Streaming builds: SIGKILLed at random points (real subprocesses) and resumed, worker processes,
a changed source after a kill; each result must equal an uninterrupted build, file for file."""

import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hybrid_jax.data import build_store, open_store
from hybrid_jax.data.sources import TextSource
from hybrid_jax.data.vocab import load_tokenizer

from tests.helpers.data import write_text_corpus

OPTIONS = dict(val_fraction=0.3, shard_tokens=5000, batch_bytes=4096)
# argv: pattern, out, processes, and the event (stage, count) after which the build stops to
# wait for its SIGKILL ("" for none): the kill then lands exactly there, however slowly the
# parent reads (a kill that landed late, after the build had removed its checkpoint, once
# made a resume start over).
_SCRIPT = textwrap.dedent("""
    import sys, time
    from hybrid_jax.data import build_store
    from hybrid_jax.data.sources import TextSource
    from hybrid_jax.data.vocab import load_tokenizer

    pause_stage, _, pause_n = sys.argv[4].partition(":")
    seen = 0

    def on_progress(stage, n):
        global seen
        print(stage, n, flush=True)
        if stage == pause_stage:
            seen += 1
            if seen == int(pause_n):
                time.sleep(600)  # until the parent's SIGKILL

    build_store(TextSource([sys.argv[1]], "blank-lines"), load_tokenizer("byte"), sys.argv[2],
                processes=int(sys.argv[3]), on_progress=on_progress, **{OPTIONS!r})
""").replace("{OPTIONS!r}", repr(OPTIONS))


def _build(pattern: str, out: Path) -> dict:
    return build_store(TextSource([pattern], "blank-lines"), load_tokenizer("byte"), out,
                       **OPTIONS)


def _run(pattern: str, out: Path, processes: int = 1, kill_after: tuple[str, int] | None = None
         ) -> list[str]:
    """The build in a subprocess; SIGKILLed right after its kill_after=(stage, n)-th event,
    where it waits for the kill."""
    pause = f"{kill_after[0]}:{kill_after[1]}" if kill_after else ""
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT, pattern, str(out), str(processes),
                             pause], stdout=subprocess.PIPE, text=True)
    lines, seen = [], 0
    for line in proc.stdout:
        lines.append(line.strip())
        if kill_after and line.startswith(kill_after[0]):
            seen += 1
            if seen == kill_after[1]:
                proc.send_signal(signal.SIGKILL)
                break
    proc.stdout.close()
    code = proc.wait(timeout=60)
    assert code == (-signal.SIGKILL if kill_after else 0), lines[-3:]
    return lines


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    text = write_text_corpus(root / "corpus")
    return str(text / "*.txt"), _build(str(text / "*.txt"), root / "clean")


def test_build_killed_at_random_points_resumes_to_the_same_store(corpus, tmp_path):
    pattern, clean = corpus
    n_batches = sum(len(d.text) for d in TextSource([pattern], "blank-lines").documents()
                    ) // OPTIONS["batch_bytes"]
    rng = random.Random(7)
    out = tmp_path / "store"
    # a worker-pool build killed mid-tokenizing, resumed by single-process builds
    _run(pattern, out, processes=2, kill_after=("tokenized", rng.randrange(2, n_batches // 3)))
    _run(pattern, out, kill_after=("tokenized", rng.randrange(n_batches // 3, n_batches)))
    assert not (out / "manifest.json").exists() and (tmp_path / "store.build").is_dir()
    for scratch in ("raw.bin", "records.bin"):  # as if killed mid-write after a checkpoint
        with open(tmp_path / "store.build" / scratch, "ab") as f:
            f.write(b"\xff" * 1001)
    lines = _run(pattern, out, kill_after=("train written", 1))
    assert any(line.startswith("resumed ") and int(line.split()[1]) > 0 for line in lines)
    lines = _run(pattern, out)
    assert any(line.startswith("resumed ") for line in lines)
    assert not (tmp_path / "store.build").exists()
    assert open_store(out).manifest["files"] == clean["files"]  # open_store verifies sha256s


def test_a_source_changed_after_a_kill_starts_over(corpus, tmp_path, capfd):
    pattern, _ = corpus
    text = tmp_path / "corpus"
    shutil.copytree(Path(pattern).parent, text)
    out = tmp_path / "store"
    _run(str(text / "*.txt"), out, kill_after=("tokenized", 3))
    first = sorted(text.glob("*.txt"))[0]
    first.write_text("a different first document\n\n" + first.read_text())
    rebuilt = _build(str(text / "*.txt"), out)
    assert "starting over" in capfd.readouterr().err
    assert rebuilt["files"] == _build(str(text / "*.txt"), tmp_path / "clean")["files"]
