"""Runnable examples: a Flask app, a Django project and a FastAPI app (see each module's top)."""
