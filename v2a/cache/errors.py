"""The errors of the feature cache (see :mod:`v2a.cache`)."""

from __future__ import annotations

from v2a.errors import UserError


class CacheError(UserError):
    """A cache folder that cannot be used as it is (missing, unfinished, damaged)."""


class CacheMismatchError(CacheError):
    """A cache extracted with other components, options or data than those asked for."""

    exit_code = 2
