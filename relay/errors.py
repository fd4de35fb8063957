"""The project's own errors: every one a RelayError, so a caller (the CLI) can handle them in one clause."""

from __future__ import annotations


class RelayError(Exception):
    """Base of every error relay raises on purpose; its text is worded for the user."""


class StoreError(RelayError):
    """A request the data does not allow (unknown account, duplicate name...), worded for the user."""


class StoreUnavailable(RelayError):
    """The database could not be reached or answered with a server-side failure; transient."""


class ListenError(RelayError):
    """A listener could not be set up (bound, or its certificate loaded); one line names the config key."""


class NotMigrated(RelayError):
    """The database lacks migrations; `relay migrate` fixes it."""


class UsageError(RelayError):
    """Bad input to a command."""
