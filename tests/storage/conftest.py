"""`root`: each storage test runs on a local directory and on gs:// (the emulator)."""

import pytest

from hybrid_jax.storage.paths import as_path
from tests.helpers.gcs import gcs_bucket, gcs_emulator, gs_prefix  # noqa: F401 (fixtures)


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
    if request.param == "local":
        return as_path(tmp_path)
    bucket = request.getfixturevalue("gcs_bucket")
    path = as_path(gs_prefix(bucket, request.node.originalname))
    path.mkdir()  # exists, empty, as tmp_path does
    return path
