"""The data package's error for bad stores, here so that every reader can raise it."""


class StoreError(ValueError):
    """A store is missing, incomplete, or does not match its manifest."""
