"""Token authentication for event streams: the implementation of :mod:`eventstream.auth`.

The package imports nothing on its own. :class:`~eventstream.auth.Grant` and
:class:`~eventstream.auth.Unauthorized` live in ``_base/_exceptions.py``, below both
``types.py`` and the request path.

PyJWT, cryptography and httpx are imported where a key is loaded, a token read
or a JWKS document fetched, not with :mod:`eventstream.auth`: an app that only
answers its own ``authorize`` with a ``Grant`` does not load them (about 22,000
objects, which every full garbage collection of the process walks).
"""
