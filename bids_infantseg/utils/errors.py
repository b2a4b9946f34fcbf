"""The package's one error base, so that the command line needs no list of error classes.

Every error a user can cause (a bad flag value, an unusable input file, a locked work folder,
a model that does not fit) derives from :class:`InfantsegError`; ``bids_infantseg`` prints its
message as one line, ``bids_infantseg: error: ...``, and exits with status 2. Errors that were
``ValueError`` or ``RuntimeError`` keep that as a second base, so library callers that catch
those still do.
"""

from __future__ import annotations


class InfantsegError(Exception):
    """A usage error or an unusable input: one line naming what is wrong, exit status 2."""
