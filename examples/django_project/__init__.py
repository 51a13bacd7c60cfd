"""A Django project on ``SESSION_ENGINE = "sessionkeeper.django"``.

Run (from the repository root):

    .venv/bin/gunicorn -w 2 -b 127.0.0.1:8000 examples.django_project.wsgi

or ``.venv/bin/python -m examples.django_project.manage check`` (and ``clearsessions``).
Environment: ``SESSIONKEEPER_STORE`` (default ``sqlite:///sessions.db``), ``SESSIONKEEPER_WRITE``,
``SESSIONKEEPER_NODE``, ``SESSIONKEEPER_SERIALIZE_ACCESS=1``.
"""
