"""Token authentication for event streams: the implementation of :mod:`eventstream.auth`.

The package imports nothing on its own: ``types.py`` takes :class:`~._grant.Grant`
from ``_grant.py`` without pulling in the JWT machinery.
"""
