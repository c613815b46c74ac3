"""Alembic migrations of the controller's database (both backends).

Applied at start by :func:`controller.storage.migrate.upgrade`; ``env.py`` runs them on
the connection it is handed, so there is no alembic.ini to keep in step.
"""
