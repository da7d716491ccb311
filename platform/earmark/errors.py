"""Domain errors: each carries a stable code, and a message that names the problem and the fix.

Edges (CLI, Streamlit pages, HTTP endpoints) translate these; services and the store raise them.
"""

from __future__ import annotations


class EarmarkError(Exception):
    code = "earmark_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidInput(EarmarkError):
    code = "invalid_input"


class NotFound(EarmarkError):
    code = "not_found"


class Conflict(EarmarkError):
    code = "conflict"


class PermissionDenied(EarmarkError):
    code = "permission_denied"


class AuthenticationFailed(EarmarkError):
    code = "authentication_failed"


class LeaseExpired(EarmarkError):
    code = "lease_expired"


class BlobError(EarmarkError):
    code = "blob_error"


class BlobMissing(BlobError):
    code = "blob_missing"


class BlobCorrupt(BlobError):
    code = "blob_corrupt"


class StoreUnavailable(EarmarkError):
    code = "store_unavailable"


class SchemaBehind(EarmarkError):
    code = "schema_behind"
