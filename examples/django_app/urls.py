from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.homepage),
    path("api/publish", views.publish),
]
