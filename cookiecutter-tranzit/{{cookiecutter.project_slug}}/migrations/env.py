"""Alembic's environment: `tranzit migrate` runs the scripts in versions/ against database_url."""

from tranzit.db import run_migrations

run_migrations()
