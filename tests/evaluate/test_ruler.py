"""The synthetic long-context tasks: deterministic per seed, of the asked length, and with
answers that an independent solver reads back from the prompt alone; the suite runs end to end
through `hybrid-jax eval long-context`."""

import collections
import json
import re

import pytest

from hybrid_jax.cli import main
from hybrid_jax.data import load_tokenizer
from hybrid_jax.evaluate import ruler
from hybrid_jax.evaluate.long_context import parse_lengths
from hybrid_jax.generate.api import encode_prompt
from tests.generate.tiny import save_tiny_model
from tests.helpers.gcs import gcs_bucket, gcs_emulator, gs_prefix  # noqa: F401 (fixtures)

BYTE = load_tokenizer("byte")


def count(text):
    return len(encode_prompt(BYTE, text))


def solve(task: str, prompt: str) -> tuple[str, ...]:
    """The answers, from the prompt alone."""
    if task.startswith("niah"):
        asked = re.search(r"special magic numbers? for (\w+) mentioned in the provided text\?",
                          prompt).group(1)
        return tuple(re.findall(rf"special magic numbers for {asked} is: (\d+)\.", prompt))
    if task == "variable_tracking":
        value = re.search(r"assigned the value (\d+) in the text above", prompt).group(1)
        holds, changed = set(), True
        assigns = re.findall(r"VAR (\w+) = (VAR (\w+)|\d+)\.", prompt)
        while changed:
            changed = False
            for name, rhs, src in assigns:
                if name not in holds and (rhs == value or src in holds):
                    holds.add(name)
                    changed = True
        return tuple(sorted(holds))
    words = re.findall(r"^\d+\. (\w+)$", prompt, re.M)
    return tuple(w for w, _ in collections.Counter(words).most_common(10))


@pytest.mark.parametrize("task", sorted(ruler.TASKS))
def test_examples_are_deterministic_sized_and_answerable(task):
    hay = ruler.Haystack("noise")
    make = lambda seed, length=700: ruler.make_example(  # noqa: E731
        task, length, 0, seed=seed, count_tokens=count, haystack=hay)
    ex = make(0)
    assert ex == make(0) and ex.answers != make(1).answers
    assert 0.9 * 700 <= count(ex.prompt) <= 700
    assert sorted(solve(task, ex.prompt)) == sorted(ex.answers)
    assert ruler.score(" , ".join(ex.answers), ex.answers) == 1.0
    assert ruler.score(ex.answers[0], ex.answers) == 1 / len(ex.answers)


def test_pycode_haystack_and_lengths():
    ex = ruler.make_example("niah_multikey", 2000, 3, seed=0, count_tokens=count,
                            haystack=ruler.Haystack("pycode"))
    assert 1800 <= count(ex.prompt) <= 2000 and "def " in ex.prompt
    assert solve("niah_multikey", ex.prompt) == ex.answers
    assert parse_lengths("1k, 2K,500") == [1024, 2048, 500]
    with pytest.raises(ValueError, match="positive length"):
        parse_lengths("1k,x")
    with pytest.raises(ValueError, match="could not fit"):
        ruler.make_example("niah_single", 50, 0, seed=0, count_tokens=count,
                           haystack=ruler.Haystack("noise"))


def test_training_documents_are_sized_answered_and_unlike_the_evaluated_ones():
    docs = list(ruler.training_documents(40, min_chars=600, max_chars=900, seed=0))
    assert docs == list(ruler.training_documents(40, min_chars=600, max_chars=900, seed=0))
    assert docs != list(ruler.training_documents(40, min_chars=600, max_chars=900, seed=1))
    assert len(docs) == 40
    # every task and both haystacks, in turn; each document ends with its own answers
    assert sum("def " in d for d in docs) > 0 and sum("grass is green" in d for d in docs) > 0
    for doc in docs:
        task = ("niah" if "magic number" in doc else
                "variable_tracking" if "variable assignment" in doc else "common_words")
        prompt, _, given = doc.rpartition(":")
        assert given.endswith(".") and len(prompt) <= 900
        assert sorted(given[:-1].strip().split(", ")) == sorted(solve(task, prompt + ":"))
    # the evaluation's examples (integer seeds) are never among them
    evaluated = {ruler.make_example(t, n, i, seed=0, count_tokens=len,
                                    haystack=ruler.Haystack("noise")).prompt
                 for t in ruler.TASKS for n in (800, 900) for i in range(3)}
    assert not evaluated & {d.rpartition(":")[0] + ":" for d in docs}
    with pytest.raises(ValueError, match="too few"):
        list(ruler.training_documents(3, min_chars=10, max_chars=20, seed=0))


def test_long_context_data_cli(tmp_path, capsys):
    out = tmp_path / "tasks.jsonl"
    assert main(["eval", "long-context-data", "--out", str(out), "--docs", "7", "--chars",
                 "500-700", "--tasks", "niah_single"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 7 and all(r["text"].startswith("Some special magic") for r in rows)
    for args, match in ((["--chars", "5"], "not MIN-MAX"), (["--chars", "10-20"], "too few"),
                        (["--tasks", "nope"], "unknown task")):
        bad = tmp_path / "bad.jsonl"
        assert main(["eval", "long-context-data", "--out", str(bad), "--docs", "3",
                     *args]) == 2
        assert match in capsys.readouterr().err and not list(tmp_path.glob("bad*"))


def test_long_context_cli_writes_accuracy_per_task_and_length(tmp_path, capsys):
    _, path = save_tiny_model(tmp_path / "model", "gdn")
    out = tmp_path / "lc.json"
    rc = main(["eval", "long-context", str(path), "--tokenizer", "byte", "--lengths", "640",
               "--tasks", "niah_single,niah_multikey", "--samples", "3", "--batch-size", "2",
               "--teacher-forced", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    cells = {(r["task"], r["length"]): r for r in doc["accuracy"]}
    assert set(cells) == {("niah_single", 640), ("niah_multikey", 640)} and doc["complete"]
    # An untrained model scores about 0: a 7-digit number by chance is ~1e-7.
    assert all(r["accuracy"] == 0.0 and r["n"] == 3 for r in cells.values())
    # teacher-forced: the answer's log-probability per token, about log(1/259) untrained
    for r in cells.values():
        assert r["teacher_forced_exact"] == 0.0 and -9 < r["answer_logprob"] < -3, r
    assert "niah_single" in capsys.readouterr().out
    # the heatmap against another model's results (a hand-made file with another length)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"accuracy": [
        {"task": "niah_single", "length": 1024, "accuracy": 0.75, "n": 4}]}))
    # a run stopped part-way (the file rewritten after every cell) is labelled as such
    from hybrid_jax.evaluate.long_context_plot import read_models
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({**doc, "complete": False}))
    assert [label for label, _ in read_models([f"gdn={partial}"])] == ["gdn (partial)"]
    fig = tmp_path / "lc.png"
    assert main(["eval", "long-context-plot", f"gdn={out}", str(other), "--out", str(fig)]) == 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["eval", "long-context-plot", str(tmp_path / "missing.json"), "--out",
                 str(fig)]) == 2
    assert "not a long-context result" in capsys.readouterr().err


def test_long_context_resume_keeps_the_cells_already_written(tmp_path, capsys):
    """--resume runs only the cells --out lacks: a cell marked in the file survives (it was not
    run again), the new length is added, and a file of other settings or another checkpoint
    is refused and left as it was."""
    _, path = save_tiny_model(tmp_path / "model", "gdn")
    out = tmp_path / "lc.json"
    base = ["eval", "long-context", str(path), "--tokenizer", "byte", "--tasks", "niah_single",
            "--samples", "2", "--batch-size", "2", "--out", str(out)]
    assert main([*base, "--lengths", "600"]) == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    doc["accuracy"][0]["accuracy"] = 0.5  # a mark: what a rerun would not reproduce
    doc["complete"] = False  # as a run stopped part-way leaves it
    out.write_text(json.dumps(doc))
    assert main([*base, "--lengths", "600,700", "--resume"]) == 0, capsys.readouterr().err
    resumed = json.loads(out.read_text())
    cells = {r["length"]: r["accuracy"] for r in resumed["accuracy"]}
    assert cells == {600: 0.5, 700: 0.0} and resumed["complete"]
    assert resumed["settings"]["lengths"] == [600, 700]
    before = out.read_text()
    assert main([*base, "--lengths", "800", "--resume", "--seed", "1"]) == 2
    assert "settings differ in ['seed']" in capsys.readouterr().err
    other = save_tiny_model(tmp_path / "other", "gdn")[1]
    assert main([*base[:2], str(other), *base[3:], "--lengths", "800", "--resume"]) == 2
    assert "holds results of" in capsys.readouterr().err
    assert out.read_text() == before


def test_long_context_out_and_resume_on_gs(tmp_path, capsys, gcs_bucket):
    """--out on gs:// (the GCS emulator): written, then resumed from."""
    from hybrid_jax.storage.paths import as_path
    _, path = save_tiny_model(tmp_path / "model", "gdn")
    out = gs_prefix(gcs_bucket, "lc") + "/lc.json"
    base = ["eval", "long-context", str(path), "--tokenizer", "byte", "--tasks", "niah_single",
            "--samples", "1", "--batch-size", "1", "--out", out]
    assert main([*base, "--lengths", "600"]) == 0, capsys.readouterr().err
    assert main([*base, "--lengths", "600,650", "--resume"]) == 0, capsys.readouterr().err
    doc = json.loads(as_path(out).read_text())
    assert doc["complete"] and [r["length"] for r in doc["accuracy"]] == [600, 650]


def test_plot_merges_one_checkpoints_files_under_one_label(tmp_path):
    from hybrid_jax.evaluate.long_context_plot import read_models

    def write(name, lengths, checkpoint=None, complete=True):
        path = tmp_path / name
        path.write_text(json.dumps({
            "checkpoint": checkpoint or {"run_dir": "/runs/h", "step": 9}, "complete": complete,
            "accuracy": [{"task": "niah_single", "length": n, "accuracy": 0.5, "n": 4}
                         for n in lengths]}))
        return str(path)

    short, long = write("a.json", [1024, 2048]), write("b.json", [4096], complete=False)
    other = write("t.json", [1024], checkpoint={"run_dir": "/runs/t", "step": 9})
    models = read_models([f"h={short}", f"t={other}", f"h={long}"])
    assert [label for label, _ in models] == ["h (partial)", "t"]
    assert sorted(c["length"] for c in models[0][1]) == [1024, 2048, 4096]
    with pytest.raises(ValueError, match="two checkpoints"):
        read_models([f"h={short}", f"h={other}"])
    with pytest.raises(ValueError, match=r"niah_single@1024"):
        read_models([f"h={short}", f"h={write('c.json', [1024, 8192])}"])


def test_teacher_forced_scores_equal_a_direct_forward(tmp_path):
    import jax
    import numpy as np

    from hybrid_jax.evaluate.long_context import run_suite
    model, _ = save_tiny_model(tmp_path / "model", "hybrid")
    out = run_suite(model, BYTE, lengths=[600], tasks=("niah_single",), samples=2,
                    batch_size=2, teacher_forced=True)
    cell = out["accuracy"][0]
    per_token = []
    for i in range(2):
        ex = ruler.make_example("niah_single", 600, i, seed=0, count_tokens=count,
                                haystack=ruler.Haystack("noise"))
        prompt = encode_prompt(BYTE, ex.prompt)
        answer = list(BYTE.encode(ruler.answer_text(ex.answers)))
        tokens = np.asarray([prompt + answer])
        logp = jax.nn.log_softmax(np.asarray(model(tokens[:, :-1]), np.float64), axis=-1)[0]
        picked = [logp[len(prompt) - 1 + j, t] for j, t in enumerate(answer)]
        per_token.append(float(np.mean(picked)))
    assert abs(cell["answer_logprob"] - np.mean(per_token)) < 1e-4
