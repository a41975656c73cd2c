"""The WSGI entry point for a production server: ``gunicorn wsgi:app`` (the database comes from the settings).

``safestats serve`` runs the same app with Flask's own server for development and the demo.
"""
from dashapp import create_app

app = create_app()
