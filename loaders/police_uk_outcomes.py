"""police.uk outcomes files (``YYYY-MM-<force>-outcomes.csv[.gz]``): an update drop on the shared pipeline.

Each row says that the crime with this Crime ID (usually recorded in an earlier month) reached this outcome
in the file's month. The rows add no incidents: they update the crimes the street files loaded (supplier
``police_uk``, ``supplier_record_id`` = Crime ID), whose ``attributes`` get the latest outcome
(``last_outcome_category``, ``last_outcome_month``), and every row is kept in ``police_uk_outcome_history``
(one crime often has several outcomes over the months). Rows whose crime is not loaded (older than the
street files held, outside the loaded forces) are counted as unmatched in the drop report, not errors.
Reading, encoding, header and quarantine are the pipeline's; the write step is ``apply_update``. A later
file for the same force and month replaces the earlier one's history rows. docs/suppliers/police_uk_outcomes.md.
"""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime, timedelta

from loaders.pipeline import Quarantine, SupplierFormat, json_object
from loaders.police_uk import LONDON, MONTH_RE, RECORD_ACCESS_LEVEL


class PoliceUkOutcomesFormat(SupplierFormat):
    supplier = "police_uk_outcomes"
    file_pattern = re.compile(r"^(?P<month>\d{4}-\d{2})-(?P<force>[a-z0-9-]+)-outcomes\.csv(\.gz)?$")
    columns = ("Crime ID", "Month", "Reported by", "Falls within", "Longitude", "Latitude", "Location",
               "LSOA code", "LSOA name", "Outcome type")

    def __init__(self, file_name, mapping):
        super().__init__(file_name, mapping)
        self.file_month = self.file_match.group("month") if self.file_match else None
        self.forces: set[str] = set()
        self.latest_month = date.today().strftime("%Y-%m")

    def harmonise_row(self, fields: list[str], line_no: int) -> tuple:
        (crime_id, month, reported_by, falls_within, lon, lat, location, lsoa_code, lsoa_name, outcome) = fields
        crime_id, month, outcome, force = crime_id.strip(), month.strip(), outcome.strip(), reported_by.strip()
        if not crime_id:
            raise Quarantine("blank Crime ID: an outcome must name the crime it belongs to")
        m = MONTH_RE.fullmatch(month)
        if not m or not (1 <= int(m.group(2)) <= 12) or int(m.group(1)) < 2000:
            raise Quarantine(f"unparseable month {month!r} (expected YYYY-MM)")
        if month > self.latest_month:
            raise Quarantine(f"month {month} is in the future")
        if self.file_month and month != self.file_month:
            raise Quarantine(f"month {month} differs from the drop's month {self.file_month} "
                             "(a police.uk outcomes file holds one month's outcomes)")
        if not outcome:
            raise Quarantine("blank Outcome type")
        if not force:
            raise Quarantine("blank 'Reported by' (the force)")
        self.forces.add(force)
        month_start = datetime(int(m.group(1)), int(m.group(2)), 1, tzinfo=LONDON)
        # Only what the update needs: the crime's own location and LSOA are in its street row already.
        attributes = json_object(("force", force), ("month", month), ("outcome_type", outcome))
        return (line_no, crime_id, month_start, "month", 0, outcome, None, None, None, None, None,
                None, None, "none", None, RECORD_ACCESS_LEVEL, attributes)

    def replace_key(self) -> str | None:
        if not self.forces:
            return None
        return f"{'+'.join(sorted(self.forces))}|{self.file_month}"

    def apply_update(self, cur, drop_id, columns, replaced_drop_ids) -> int:
        line_nos = columns["line_no"].to_pylist()
        crime_ids = columns["supplier_record_id"].to_pylist()
        months = [ts.astimezone(LONDON).date() for ts in columns["occurred_at"].to_pylist()]
        attributes = [json.loads(a) for a in columns["attributes"].to_pylist()]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for line_no, crime_id, month, attrs in zip(line_nos, crime_ids, months, attributes):
            writer.writerow((line_no, crime_id, month.isoformat(), attrs["outcome_type"], attrs["force"]))
        latest = max(months, default=date(2000, 1, 1))
        # A crime is recorded before (or in) the month of its outcome; the bound lets PostgreSQL skip the
        # partitions of later years. (No index on supplier_record_id: it would cost every street load.)
        until = (datetime(latest.year, latest.month, 1, tzinfo=LONDON) + timedelta(days=32)).replace(day=1)
        cur.execute("""
            CREATE TEMP TABLE outcome_rows (line_no integer, crime_id text, month date, outcome_type text,
                                            force text) ON COMMIT DROP""")
        buffer.seek(0)
        cur.copy_expert("COPY outcome_rows FROM STDIN WITH (FORMAT csv)", buffer)
        cur.execute("""
            -- Crimes whose latest outcome may change: this drop's, and those of the drops it replaces.
            CREATE TEMP TABLE outcome_affected ON COMMIT DROP AS
                SELECT crime_id FROM outcome_rows
                UNION SELECT crime_id FROM police_uk_outcome_history WHERE drop_id = ANY(%(replaced)s);
            DELETE FROM police_uk_outcome_history WHERE drop_id = ANY(%(replaced)s);
            CREATE TEMP TABLE outcome_matched ON COMMIT DROP AS
                SELECT DISTINCT supplier_record_id AS crime_id FROM incidents
                WHERE supplier = 'police_uk' AND occurred_at < %(until)s
                  AND supplier_record_id IN (SELECT crime_id FROM outcome_affected);
            INSERT INTO police_uk_outcome_history (drop_id, line_no, crime_id, month, outcome_type, force, matched)
                SELECT %(drop)s, o.line_no, o.crime_id, o.month, o.outcome_type, o.force, m.crime_id IS NOT NULL
                FROM outcome_rows o LEFT JOIN outcome_matched m USING (crime_id);
            UPDATE incidents i
               SET attributes = i.attributes || jsonb_build_object(
                       'last_outcome_category', l.outcome_type, 'last_outcome_month', to_char(l.month, 'YYYY-MM'))
              FROM (SELECT DISTINCT ON (crime_id) crime_id, month, outcome_type FROM police_uk_outcome_history
                    WHERE crime_id IN (SELECT crime_id FROM outcome_matched)
                    ORDER BY crime_id, month DESC, drop_id DESC, line_no DESC) l
             WHERE i.supplier = 'police_uk' AND i.supplier_record_id = l.crime_id AND i.occurred_at < %(until)s;
            SELECT count(*) FROM police_uk_outcome_history WHERE drop_id = %(drop)s AND NOT matched""",
                    {"replaced": list(replaced_drop_ids), "until": until, "drop": drop_id})
        return cur.fetchone()[0]
