"""Where the suite keeps state: local paths and gs:// alike (docs/storage.md).

    paths.py      the path type (etils.epath.Path), atomic text writes and reads
    objects.py    conditional create / replace / delete with versions, on either kind of path
    local.py      those operations on a POSIX filesystem (link, flock, os.replace)
    gcs.py        those operations on Google Cloud Storage (generation preconditions)
    gcs_epath.py  epath's gs:// backend on google-cloud-storage (orbax writes through it)
    claims.py     a claim on a run directory: create-if-absent, heartbeat, reclaim, release
    results.py    result rows as one object each: appended without a read-modify-write

gs:// needs google-cloud-storage (the [cluster] extra); local paths need nothing more.
"""
