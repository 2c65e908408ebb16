"""Alembic environment and migration scripts of keyturn's store (a package so it ships)."""
