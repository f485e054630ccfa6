"""Static files storage that serves hashed names but never breaks a page."""

from django.contrib.staticfiles.storage import ManifestStaticFilesStorage
from django.core.files.storage import FileSystemStorage


class ForgivingManifestStaticFilesStorage(ManifestStaticFilesStorage):
    """ManifestStaticFilesStorage that falls back to plain names.

    A checkout that has not run collectstatic yet (or lacks an entry) must
    still render ``/``, so a missing manifest entry yields ``/static/<name>``
    instead of a ValueError (which would be a 500 with DEBUG off).
    """

    manifest_strict = False

    def url(self, name: str | None, force: bool = False) -> str:
        """Return the hashed URL when known, else the plain one."""
        try:
            return super().url(name, force)
        except ValueError:
            return FileSystemStorage.url(self, name)
