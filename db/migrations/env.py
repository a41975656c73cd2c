"""Alembic environment: runs the migrations under db/migrations/versions against the configured database.

The URL comes from the Alembic config's ``sqlalchemy.url`` when a caller set it (tests, ``db.migrate``),
otherwise from ``db.database_url()`` (DATABASE_URL or the embedded cluster). Migrations are hand-written:
there is no ORM metadata to autogenerate from, because views and functions live as SQL under db/sql/.
"""
from alembic import context
from sqlalchemy import create_engine, pool

from db import database_url, sqlalchemy_url

config = context.config
url = config.get_main_option("sqlalchemy.url") or database_url()

engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
