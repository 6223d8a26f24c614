"""One exception hierarchy; each class carries its command-line exit code.

0 the run completed (also when some files were bad); 1 an error that is not
the user's (unwritable output, damaged cache, I/O); 2 usage (bad option,
missing path, bad labels, too little data, a method the backbone cannot
serve); 3 model weights not available offline; 130 Ctrl-C.
"""

from __future__ import annotations

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class PhotocriticError(Exception):
    """Base of photocritic's expected failures; ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_ERROR


class UsageError(PhotocriticError):
    """A bad option, path or combination of options."""

    exit_code = EXIT_USAGE


class DataError(UsageError, ValueError):
    """The data cannot serve the request (too few labelled images, a dimension mismatch)."""


class ViewError(UsageError):
    """A method needs a feature view that the backbone does not provide."""


class OutputExistsError(UsageError):
    """The output exists and --overwrite was not given."""


class ModelFormatError(UsageError, ValueError):
    """A model directory that photocritic cannot read."""
