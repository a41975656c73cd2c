"""Resident population by LSOA (ONS mid-year estimates), for rates per 1,000 residents.

Revision ID: 0003_population
Revises: 0002_users
Create Date: 2026-11-23

One row per LSOA and mid-year; MSOA and borough populations are sums of their LSOAs (the query layer
does that, so a reloaded year changes every level at once). ``source`` names the file a year came from.
"""
from alembic import op

revision = "0003_population"
down_revision = "0002_users"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE area_population (
        lsoa_code   text NOT NULL,
        year        smallint NOT NULL CHECK (year BETWEEN 1990 AND 2100),
        population  integer NOT NULL CHECK (population >= 0),
        source      text NOT NULL,
        loaded_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (lsoa_code, year)
    );
    COMMENT ON TABLE area_population IS 'ONS mid-year resident population estimates by LSOA (all ages)';
    """)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS area_population")
