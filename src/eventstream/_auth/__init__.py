"""Token authentication for event streams: the implementation of :mod:`eventstream.auth`.

The package imports nothing on its own. :class:`~eventstream.auth.Grant` and
:class:`~eventstream.auth.Unauthorized` live in ``_base/_exceptions.py``, below both
``types.py`` and the request path.
"""
