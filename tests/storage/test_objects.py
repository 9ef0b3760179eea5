"""Conditional object operations and atomic text writes, on a local directory and on gs:// (the
emulator): one winner among racing creates, writes and deletes refused once the version moved
on, paths refused with the problem named."""

import pytest

from hybrid_jax.storage import objects
from hybrid_jax.storage.paths import (as_path, is_object_store, read_text_or_none,
                                      write_text_atomic)

from tests.helpers.threads import race


def test_create_if_absent_has_one_winner(root):
    path = root / "one" / "obj"
    assert objects.create(path, b"first") is not None
    assert objects.create(path, b"second") is None
    assert objects.read(path).data == b"first"
    for round_ in range(5):  # racing: exactly one of 6 creates wins, and its bytes are stored
        path = root / f"race-{round_}"
        won = race(6, lambda i: objects.create(path, f"writer {i}".encode()))
        winners = [i for i, v in enumerate(won) if v is not None]
        assert len(winners) == 1, won
        seen = objects.read(path)
        assert seen.data == f"writer {winners[0]}".encode() and seen.version == won[winners[0]]


def test_replace_and_delete_only_at_the_version_they_name(root):
    path = root / "obj"
    v1 = objects.create(path, b"one")
    v2 = objects.replace(path, b"two", v1)
    assert v2 is not None and v2 != v1
    assert objects.replace(path, b"three", v1) is None  # v1 is gone: refused
    assert not objects.delete(path, v1)
    assert objects.read(path).data == b"two"
    won = race(4, lambda i: objects.replace(path, f"r{i}".encode(), v2))
    assert sum(v is not None for v in won) == 1, won
    v3 = objects.read(path).version
    assert objects.delete(path, v3)
    assert objects.read(path) is None
    assert objects.replace(path, b"four", v3) is None  # no object: nothing to replace
    assert not objects.delete(path, v3)


def test_read_gives_a_fresh_age(root):
    path = root / "aged"
    objects.create(path, b"x")
    assert 0 <= objects.read(path).age < 5
    assert objects.read(root / "missing") is None


def test_atomic_text_and_listing(root):
    path = root / "dir" / "note.txt"
    assert read_text_or_none(path) is None
    write_text_atomic(path, "one\n")
    write_text_atomic(path, "two ☃\n")
    assert read_text_or_none(path) == "two ☃\n"
    objects.create(root / "dir" / "b.json", b"{}")
    objects.create(root / "dir" / "sub" / "deeper", b"")
    assert objects.list_names(root / "dir") == ["b.json", "note.txt"]
    assert objects.list_names(root / "nowhere") == []
    assert is_object_store(root) == str(root).startswith("gs://")


@pytest.mark.parametrize("bad, problem", [
    ("", "empty path"), ("s3://bucket/x", "unsupported path"), ("gs://", "without a bucket"),
    ("http://host/x", "unsupported path"), (3, "str or os.PathLike")])
def test_bad_paths_are_refused_naming_the_problem(bad, problem):
    with pytest.raises((ValueError, TypeError), match=problem):
        as_path(bad)


def test_local_crash_leftovers_are_not_listed(tmp_path):
    (tmp_path / ".row.json.123.abcd.tmp").write_bytes(b"half a ro")
    objects.create(tmp_path / "row.json", b"{}")
    assert objects.list_names(tmp_path) == ["row.json"]


def test_concurrent_appends_lose_nothing(root):
    path = root / "log.jsonl"
    race(6, lambda i: objects.append(path, f"{i}\n".encode()))
    objects.append(path, b"last\n")
    lines = objects.read_bytes(path).decode().splitlines()
    assert sorted(lines[:-1]) == [str(i) for i in range(6)] and lines[-1] == "last"
