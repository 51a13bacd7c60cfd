"""Settings of the example project: no database, sessions in sessionkeeper."""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "examples.django_project.urls"
INSTALLED_APPS = ["django.contrib.sessions", "sessionkeeper.django.SessionKeeperConfig"]
MIDDLEWARE = [
    "sessionkeeper.django.SessionMiddleware",
    "sessionkeeper.django.SessionUnavailableMiddleware",
]
DATABASES: dict[str, object] = {}
USE_TZ = True

SESSION_ENGINE = "sessionkeeper.django"
SESSION_COOKIE_AGE = 1800
SESSIONKEEPER = {
    "STORE": os.environ.get("SESSIONKEEPER_STORE", "sqlite:///sessions.db"),
    "WRITE": os.environ.get("SESSIONKEEPER_WRITE", "end-of-request"),
    "NODE": os.environ.get("SESSIONKEEPER_NODE") or None,
    "SERIALIZE_ACCESS": os.environ.get("SESSIONKEEPER_SERIALIZE_ACCESS") == "1",
    "APP_NAME": "django-example",
}
