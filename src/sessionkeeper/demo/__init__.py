"""The demo shop: a plain WSGI app (:mod:`.app`), its gunicorn config (:mod:`.gunicorn_conf`),
the node processes (:mod:`.cluster`), the simulated users (:mod:`.driver`) and the final check
(:mod:`.report`). ``sessionkeeper demo`` (and ``make demo``) runs them together; see docs/demo.md.
"""
