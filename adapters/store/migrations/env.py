"""Alembic environment for keyturn's store, driven programmatically only.

``adapters.store.migrate`` runs Alembic inside a transaction it opened and passes the
connection in ``config.attributes["connection"]``; there is no ``alembic.ini`` and no
offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context

from adapters.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "keyturn's migrations run through `keyturn db upgrade` (adapters.store.migrate), "
        "not the alembic command line"
    )

context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
