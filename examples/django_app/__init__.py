"""Django and eventstream in one ASGI app; see :mod:`examples.django_app.asgi`."""
