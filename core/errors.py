"""User-facing errors: the CLI prints them as one line and exits with code 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (file, flag, data). Message is one line naming the culprit."""

    exit_code = 2


class DataMissingError(UserError):
    """A data set is not present locally; the message says how to get it.

    Loaders name their folder option ``--root``, the flag of ``eegsine data``; a command that
    takes it under another name (``--data-root`` in training) re-raises :meth:`for_flag`.
    """

    def for_flag(self, flag: str) -> "DataMissingError":
        return DataMissingError(str(self).replace("--root", flag))
