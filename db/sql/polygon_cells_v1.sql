-- A drawn polygon's whole-month counts from the 250 m grid rollup (migration 0019; safestats.queries reads them).
--
-- Why: a polygon drawn over central London holds about a million of 30 million incidents, and counting its
-- raw points took 1.2 s (a parallel GiST scan of 350 ms, then the grouping). The 250 m cells wholly inside
-- it hold 88 % of those points in a quarter as many rollup rows; only the cells on its edge need raw points.
-- But a cell's rollup rows are scattered over every month's pages (the table is written month by month):
-- reading the 192 inside cells of that polygon touched 251,221 pages (760 ms). With the cell index covering
-- every column the query needs, the same read is an index-only scan of 3,215 pages (186 ms), a cell's rows
-- side by side in the index whatever the heap order. It replaces the plain (cell_x, cell_y) index, which
-- the picked-cell queries used: the covering one serves them as well.
DROP INDEX IF EXISTS rollup_grid_month_cell_idx;
CREATE INDEX rollup_grid_month_cell_idx ON rollup_grid_month (cell_x, cell_y)
    INCLUDE (month, supplier, category_id, theme_mask, borough_code, incidents);

-- The rollup adds retention's folded counts to the live ones, and a polygon's edge counts only the records
-- still held: the inside cells take the folded counts off again (the raw-table SQL for a polygon counts the
-- records there are), through this view, which shows the web role what the rollup's own visible view would.
CREATE INDEX IF NOT EXISTS retained_grid_month_cell_idx ON retained_grid_month (cell_x, cell_y);
