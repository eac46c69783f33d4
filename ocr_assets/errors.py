"""One error root for the platform: every error a user can cause or fix is an `OcrAssetsError`.

Messages name the bad value, what is allowed and the fix, in one line. The CLI turns any of them into
`ocr-assets: error: <message>` and exit code 2 (docs/ARCHITECTURE.md, "Errors").
"""

from __future__ import annotations


class OcrAssetsError(Exception):
    """Base of every error the platform raises on purpose."""


class UsageError(OcrAssetsError, ValueError):
    """A bad argument, option or setting value."""


class ConfigError(UsageError):
    """A settings object or profile with unknown keys or out-of-range values."""


class SourceError(OcrAssetsError, ValueError):
    """A data source (GT folder, dataset, XML export) that cannot be read as given."""


class ImageRejected(OcrAssetsError, ValueError):
    """Image bytes that are not a decodable, reasonably sized image; `reason` is meant for people (quarantine)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class FontError(OcrAssetsError, RuntimeError):
    """No usable font, or text a font cannot draw."""


class ModelError(OcrAssetsError):
    """A model that cannot be loaded, trained, merged or saved as asked."""


class ModelNotFoundError(ModelError):
    """A model spec that names nothing loadable."""


class RemoteCodeNotAllowedError(ModelError):
    """A model whose code would have to run from its own directory, without the caller's explicit opt-in."""


class RegistryError(ModelError):
    """The MLflow registry cannot answer (no store, no such model or alias)."""


class StorageError(OcrAssetsError, OSError):
    """The data root cannot be read or written as asked."""


class InboxError(OcrAssetsError):
    """A scan inbox that cannot be listed or a scan that cannot be fetched."""


class SchemaUnavailableError(OcrAssetsError, RuntimeError):
    """The official PAGE / ALTO schemas are not installed."""


class ServingError(OcrAssetsError, RuntimeError):
    """The model server could not start or answer."""
