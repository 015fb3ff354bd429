"""The exceptions alertd raises, one tree, so callers catch exactly what they mean.

    AlertdError
    ├── ConfigError          the YAML or the environment is wrong; exit status 2
    │   └── PortError             the metrics port cannot be listened on (in use)
    ├── StoreError           the state file cannot be read, written or locked
    │   └── StateDamagedError     a state file is empty, unreadable, missing or foreign
    ├── ApiError             the OpenTrain API refused a request (4xx other than 429)
    │   ├── ApiUnavailableError   no answer (retried, or at once: deadline spent, unreachable)
    │   └── ApiDataError          an answer whose job cannot be used at all (no id)
    └── StopRequestedError   a signal asked us to stop while we were waiting

Foreign exceptions (httpx, tinydb, yaml, pydantic, OSError) are translated into
these at the one module that talks to the foreign library, with ``raise ... from``.
Delivery failures are not exceptions: they are recorded as data in the store.
"""

from __future__ import annotations


class AlertdError(Exception):
    """Base of every error alertd raises on purpose."""


def _printable(char: str) -> str:
    return char if char.isprintable() else repr(char)[1:-1]


class ConfigError(AlertdError):
    """A configuration mistake, located as precisely as we can: file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = " ".join(message.split())  # one line, whatever a library said
        self.source = source
        self.line = line
        # A YAML key may hold a line break: shown escaped, the error stays one line.
        self.field = None if field is None else "".join(_printable(c) for c in field)
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line: ``alerts.yaml:12: searches[0].payType: <what is wrong>``."""
        where = self.source or "config"
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class PortError(ConfigError):
    """The metrics port cannot be listened on: in use, or not ours to open."""

    def describe(self) -> str:
        """One line naming the option and the port: ``--metrics-port 9108 is in use``."""
        return self.message


class StoreError(AlertdError):
    """The state store could not be opened, read, locked or written."""


class StateDamagedError(StoreError):
    """The state's files are damaged: empty, not JSON, not alertd's shape, or one missing.

    Not a full disk, a permission or a lock: only this one may be moved aside to start
    over (``broken_state: move_aside``)."""


class ApiError(AlertdError):
    """The API answered with an error that retrying will not fix (400, 404...)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        self.status = status
        self.code = code
        super().__init__(message)


class ApiUnavailableError(ApiError):
    """No usable answer: after the retries we allow ourselves (5xx, bad bodies, 429), or at
    once when retrying cannot help this cycle (a whole deadline or size limit spent, the
    API unreachable: ``code`` says which)."""


class ApiDataError(ApiError):
    """The API answered, but with a job that cannot be used at all (it has no id)."""


class StopRequestedError(AlertdError):
    """A stop was requested while waiting (rate budget, back-off); the cycle ends early."""
