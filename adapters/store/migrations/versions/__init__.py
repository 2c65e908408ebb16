"""Migration scripts, one per revision (Alembic loads them by path)."""
