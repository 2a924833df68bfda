"""One exception hierarchy for everything taskwarden raises on purpose.

Every message says what went wrong and, where it helps, what to check. No message ever
contains a credential.
"""

from __future__ import annotations


class TaskwardenError(Exception):
    """Base class of every error taskwarden raises deliberately."""


class ConfigError(TaskwardenError):
    """The configuration file, environment or a CLI argument is invalid."""


# --- sources -------------------------------------------------------------------------------


class SourceError(TaskwardenError):
    """A task source (vendor API) could not be read."""

    def __init__(self, message: str, *, source: str = "", status_code: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.status_code = status_code


class InvalidRequestError(SourceError):
    """The API rejected our request (HTTP 400/422). Retrying the same request cannot help."""


class AuthenticationError(SourceError):
    """The API rejected our credentials (HTTP 401/403)."""


class NotFoundError(SourceError):
    """The API says the resource does not exist (HTTP 404)."""


class TransientSourceError(SourceError):
    """A failure that may go away by itself: 429, 5xx, timeouts, dropped connections."""

    def __init__(
        self,
        message: str,
        *,
        source: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, source=source, status_code=status_code)
        self.retry_after = retry_after


class RateLimitedError(TransientSourceError):
    """HTTP 429: the API asked us to slow down, usually with Retry-After."""


class ServerError(TransientSourceError):
    """HTTP 5xx from the API."""


class ConnectionFailedError(TransientSourceError):
    """No usable HTTP answer: refused, reset, dropped or timed out."""


class MalformedResponseError(SourceError):
    """A 2xx answer whose body is not JSON, or JSON of a shape we cannot use."""


# --- state ---------------------------------------------------------------------------------


class StateError(TaskwardenError):
    """The state store cannot be used."""


class StateLockedError(StateError):
    """Another taskwarden process holds the state file."""


class StateUnavailableError(StateError):
    """The state cannot be read or written right now (disk full, I/O error); the file is
    intact, and what could not be written is retried."""


class StateBusyError(StateUnavailableError):
    """Another connection held the state file longer than the busy timeout."""


class StateMissingError(StateError):
    """A read-only command found no state file (nothing has been polled yet)."""


class SchemaTooNewError(StateError):
    """The state file was written by a newer taskwarden; refusing to touch it."""


class SchemaOutdatedError(StateError):
    """A shared database at an older schema: `taskwarden migrate` brings it up to date
    (a replica never migrates a shared database on its own unless told)."""


class StateCorruptError(StateError):
    """The state file is not a readable taskwarden database, or a stored row cannot be
    decoded: the file is moved aside and polling restarts from the lookback."""


# --- notifications -------------------------------------------------------------------------


class LeaseLostError(TaskwardenError):
    """A fenced commit found that its lease moved on to another replica (or was released):
    the cycle is discarded, not failed; the lease's holder polls again."""


class DeliveryError(TaskwardenError):
    """A notification could not be delivered."""

    def __init__(self, message: str, *, receiver: str = "") -> None:
        super().__init__(message)
        self.receiver = receiver


class TransientDeliveryError(DeliveryError):
    """Delivery may succeed later (rate limit, 5xx, timeout, SMTP 4xx)."""

    def __init__(
        self, message: str, *, receiver: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, receiver=receiver)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Delivery cannot succeed without a configuration change (bad token, unknown channel)."""
