from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.show),
    path("incr", views.incr),
    path("login", views.login),
    path("logout", views.logout),
]
