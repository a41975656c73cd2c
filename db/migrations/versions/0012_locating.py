"""Locating records without coordinates: postcodes, the street gazetteer, location confidence, per-drop quality.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29

Issue 5's locating step (loaders/locating.py): ``postcodes`` holds ONS Postcode Directory centroids
(``safestats postcodes FILE``); ``gazetteer_streets`` the street and place names police.uk gives ("On or near
...") with their points, per borough, rebuilt after police.uk loads; ``incidents.location_confidence`` (0-100)
says how sure each row's location is at its precision (the method itself is ``location_precision``, see
safestats/location_levels.py); ``drop_location_quality`` counts each drop's rows per method, filled here for
the drops already loaded. SQL in db/sql/locating_v1.sql.
"""
from alembic import op

from db import read_sql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("locating_v1.sql"))
    # The admin data-status page (run as the web role) shows each drop's location quality; the postcodes and
    # the gazetteer are the loaders' alone.
    op.execute("GRANT SELECT ON drop_location_quality TO safestats_web")


def downgrade() -> None:
    op.execute("""
    ALTER TABLE incidents DROP COLUMN IF EXISTS location_confidence;
    DROP TABLE IF EXISTS drop_location_quality;
    DROP TABLE IF EXISTS gazetteer_refreshes;
    DROP TABLE IF EXISTS gazetteer_streets;
    DROP TABLE IF EXISTS postcodes;
    """)
