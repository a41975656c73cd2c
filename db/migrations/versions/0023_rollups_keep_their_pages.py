"""The tables the dashboard reads keep their empty end pages: autovacuum no longer truncates them.

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-30

A refresh deletes a month's rows and writes them again, so a rollup often ends in empty pages. Autovacuum
then truncates the table, which takes an ACCESS EXCLUSIVE lock: a dashboard query of that rollup waited behind
it until PostgreSQL cancelled the truncation a second later (deadlock_timeout), as the server log of a CI run
showed ("canceling autovacuum task ... while truncating relation public.rollup_area_month"). The pages are
reused by the next refresh anyway, so every rollup (the tables ``rollup_tables`` names), the folded counts a
polygon reads and the polygons' cell points are set ``vacuum_truncate = false``. The downgrade resets them.
"""
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

_EACH_TABLE = """DO $$
    DECLARE t text;
    BEGIN
        FOR t IN SELECT name FROM rollup_tables
                 UNION ALL VALUES ('retained_grid_month'), ('incident_cell_points') LOOP
            EXECUTE format('ALTER TABLE %I {action}', t);
        END LOOP;
    END $$"""


def upgrade() -> None:
    op.execute(_EACH_TABLE.format(action="SET (vacuum_truncate = false)"))


def downgrade() -> None:
    op.execute(_EACH_TABLE.format(action="RESET (vacuum_truncate)"))
