"""epath on gs:// (our google-cloud-storage backend) behaves as epath on a local directory for
what orbax and the suite use: directories, listings, globs, walks, moves, reads and writes."""

import pytest
from etils import epath

from hybrid_jax.storage.gcs_epath import GcsPath


def tree(root: epath.Path) -> None:
    (root / "ckpt" / "1" / "state").mkdir(parents=True)
    (root / "ckpt" / "1" / "state" / "a.bin").write_bytes(b"\x00\x01")
    (root / "ckpt" / "1" / "meta.json").write_text('{"step": 1}')
    (root / "ckpt" / "2.orbax-checkpoint-tmp-9").mkdir()
    (root / "ckpt" / "notes.txt").write_text("n")


def test_gs_paths_get_our_backend(gcs_bucket):
    path = epath.Path(f"gs://{gcs_bucket}/x") / "y"
    assert isinstance(path, GcsPath) and str(path) == f"gs://{gcs_bucket}/x/y"


def test_directories_listings_and_globs(root):
    tree(root)
    ckpt = root / "ckpt"
    assert ckpt.exists() and ckpt.is_dir() and not (root / "nope").exists()
    assert (ckpt / "notes.txt").is_file() and not (ckpt / "notes.txt").is_dir()
    assert sorted(p.name for p in ckpt.iterdir()) == ["1", "2.orbax-checkpoint-tmp-9",
                                                       "notes.txt"]
    empty = ckpt / "2.orbax-checkpoint-tmp-9"
    assert empty.is_dir() and list(empty.iterdir()) == []  # a new empty directory exists
    assert sorted(p.name for p in ckpt.glob("*.orbax-checkpoint-tmp-*")) == [empty.name]
    assert sorted(str(p.relative_to(ckpt)) for p in ckpt.glob("*/*")) == ["1/meta.json",
                                                                           "1/state"]
    with pytest.raises(FileExistsError):
        (ckpt / "1").mkdir()
    (ckpt / "1").mkdir(exist_ok=True)
    with pytest.raises(FileNotFoundError):
        (root / "a" / "b").mkdir()  # no parent, no parents=True


def test_walk_top_down_and_bottom_up(root):
    tree(root)
    ckpt = root / "ckpt"
    down = [(str(d.relative_to(ckpt)) if d != ckpt else ".", sorted(ds), sorted(fs))
            for d, ds, fs in ckpt.walk()]
    assert sorted(down) == [(".", ["1", "2.orbax-checkpoint-tmp-9"], ["notes.txt"]),
                            ("1", ["state"], ["meta.json"]),
                            ("1/state", [], ["a.bin"]),
                            ("2.orbax-checkpoint-tmp-9", [], [])]
    assert down[0][0] == "."
    up = [d for d, _, _ in ckpt.walk(top_down=False)]
    assert up[-1] == ckpt


def test_reads_writes_stat_and_errors(root):
    f = root / "d" / "f.txt"
    f.parent.mkdir()
    f.write_text("héllo")
    assert f.read_text() == "héllo" and f.read_bytes() == "héllo".encode()
    assert f.stat().length == len("héllo".encode()) and not f.stat().is_directory
    assert f.parent.stat().is_directory
    with pytest.raises(FileNotFoundError):
        (root / "d" / "missing").read_text()
    with pytest.raises(FileNotFoundError):
        (root / "d" / "missing").unlink()
    (root / "d" / "missing").unlink(missing_ok=True)
    f.unlink()
    assert not f.exists()


def test_a_write_left_by_an_exception_keeps_the_old_object(gcs_bucket):
    f = epath.Path(f"gs://{gcs_bucket}/exc/f")
    f.write_text("whole")
    with pytest.raises(RuntimeError), f.open("w") as out:
        out.write("half")
        raise RuntimeError("killed mid-write")
    assert f.read_text() == "whole"
    with f.open("w") as out:
        out.writelines(["a\n", "b\n"])
        print("c", file=out)
    assert f.read_text() == "a\nb\nc\n"
    with f.open("wb") as out:
        out.writelines([b"\x00", b"\xff"])
    assert f.read_bytes() == b"\x00\xff"
    with pytest.raises(OSError, match="cannot be appended"):
        f.open("a")


def test_rename_replace_copy_rmtree(root):
    tree(root)
    ckpt = root / "ckpt"
    (ckpt / "notes.txt").rename(ckpt / "moved.txt")
    assert not (ckpt / "notes.txt").exists() and (ckpt / "moved.txt").read_text() == "n"
    (ckpt / "1").rename(root / "one")
    assert not (ckpt / "1").exists()
    assert (root / "one" / "state" / "a.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(FileExistsError):
        (ckpt / "moved.txt").rename(root / "one")
    (root / "one" / "meta.json").copy(ckpt / "copy.json")
    with pytest.raises(FileExistsError):
        (root / "one" / "meta.json").copy(ckpt / "copy.json")
    (ckpt / "moved.txt").replace(ckpt / "copy.json")
    assert (ckpt / "copy.json").read_text() == "n"
    (root / "one").rmtree()
    assert not (root / "one").exists()
    with pytest.raises(FileNotFoundError):
        (root / "one").rmtree()
