"""Locating records that come without coordinates: postcode centroids, the street gazetteer, the borough.

A supplier format that cannot place a row itself (an ambulance call with a postcode, an emergency department
record with a free-text location) files a ``LocationRequest`` for it; before the rows are located in areas
the pipeline resolves every request of the drop here, as well as the evidence allows, best first:

1. **postcode**: a full postcode found in ``postcodes`` (the ONS Postcode Directory, loaders/postcodes.py)
   gives its centroid. Confidence 90 for a live postcode, 75 for a terminated one (ONSPD keeps them; the
   place has not moved, the postcode may have been reused), 60 when the supplier's own borough disagrees
   with the postcode's (the postcode wins: it is the finer statement, and the disagreement is noted).
   Postcodes outside the request's boroughs are not used for free text (a postcode typed in an ED note).
2. **gazetteer** (``location_precision = 'street'``): the free text is normalised (case, punctuation,
   "&", St/Street, Rd/Road and the other abbreviations in ``ABBREVIATIONS``; a leading "St" is Saint) and
   matched against the street and place names police.uk gives its snap points ("On or near Coldharbour
   Lane"), *only in the request's boroughs*: the borough the supplier gave, or a hospital's catchment.
   Exact first (the whole text is a name: 85; a name inside the text, longest first: 75, 60 for a single
   word), then fuzzy (difflib ratio >= 0.85 against names with the same street type and a similar length:
   60 x ratio). Long or scattered names locate less precisely: minus 10 when the name's snap points spread
   over 500 m from their centre, minus 20 over 1.5 km. A name found in several of the boroughs is taken in
   the hospital's own borough (minus 15) and otherwise not at all. The point stored is the centre of the
   name's snap points in that borough.
3. **borough**: the borough the request falls back to (the supplier's borough: confidence 100; the
   hospital's borough: 40, patients usually but not always attend the ED near where they were hurt).
4. **unlocated** (``'none'``, confidence 0).

The hospital catchment is every borough within ``CATCHMENT_M`` (5 km) of the site's point, its own
included: inner-London EDs draw most assault patients from their own and neighbouring boroughs, and 5 km
from a site reaches the neighbours without spanning London (documented in docs/suppliers/istv_ed.md).

The gazetteer (``gazetteer_streets``) is rebuilt from the store by ``refresh_gazetteer`` after police.uk
loads (``load_paths`` does it before the first drop that needs it, and at the end of a batch). Generic place
types police.uk uses instead of a street ("On or near Supermarket", "Parking Area", ...) are left out:
every borough has dozens and their centre means nothing.
"""
from __future__ import annotations

import difflib
import math
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from safestats.location_levels import DEFAULT_CONFIDENCE

CATCHMENT_M = 5_000
FUZZY_CUTOFF = 0.85
POSTCODE_IN_TEXT = re.compile(r"\b([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})\b")
# Abbreviations in street names and free text, and the word each stands for ("st" first is Saint).
ABBREVIATIONS = {
    "rd": "road", "st": "street", "str": "street", "ave": "avenue", "av": "avenue", "ln": "lane", "pl": "place",
    "sq": "square", "cres": "crescent", "cresc": "crescent", "gdns": "gardens", "gdn": "garden", "ct": "court",
    "dr": "drive", "gr": "grove", "gro": "grove", "tce": "terrace", "ter": "terrace", "terr": "terrace",
    "cl": "close", "pk": "park", "hl": "hill", "stn": "station", "wk": "walk", "upr": "upper", "lwr": "lower",
    "gt": "great", "mkt": "market", "bdwy": "broadway", "est": "estate", "nth": "north", "sth": "south",
}
STREET_TYPES = {
    "road", "street", "avenue", "lane", "place", "square", "crescent", "gardens", "garden", "court", "drive",
    "grove", "terrace", "close", "park", "hill", "walk", "way", "mews", "row", "yard", "parade", "rise",
    "green", "broadway", "passage", "alley", "wharf", "embankment", "bridge", "market", "circus", "gate",
}
# police.uk's generic place types ("On or near Supermarket"): not street names.
POLICE_UK_PLACE_TYPES = {
    "supermarket", "shopping area", "parking area", "petrol station", "further higher educational building",
    "nightclub", "hospital", "sports recreation area", "conference exhibition centre", "police station",
    "theatre concert hall", "pedestrian subway", "bus coach station", "park open space", "airport airfield",
    "prison", "church", "cemetery", "hotel", "pub", "school", "university", "railway station",
}
_PREFIX = re.compile(r"^\s*on or near\s+", re.IGNORECASE)


def normalise_name(text: str) -> str:
    """A street name or free text as a matching key: lower case, "&" as "and", apostrophes dropped, other
    punctuation as spaces, abbreviations spelt out ("St John's Rd" -> "saint johns road")."""
    text = _PREFIX.sub("", text).lower().replace("&", " and ").replace("'", "").replace("\u2019", "")
    tokens = re.sub(r"[^a-z0-9]+", " ", text).split()
    out = []
    for i, token in enumerate(tokens):
        if token == "st" and i + 1 < len(tokens) and (i == 0 or tokens[i - 1] in ("on", "at", "in", "near", "of")):
            out.append("saint")     # "St John's Road", "near St Mary's": Saint before a name
        else:
            out.append(ABBREVIATIONS.get(token, token))
    return " ".join(out)


@dataclass(frozen=True)
class LocationRequest:
    """How a supplier format asks the pipeline to locate one row it could not place itself."""

    postcode: str = ""                          # a full postcode the supplier gives ("SW9 8AB")
    text: str = ""                              # a free-text location description
    boroughs: tuple[str, ...] = ()              # where the text may be matched (the borough given)
    near: tuple[float, float] | None = None     # or: a site (BNG metres) whose catchment bounds the match
    home_borough: str | None = None             # preferred when a name is found in several boroughs
    fallback_borough: str | None = None         # when nothing finer is found
    fallback_confidence: int = 100
    fallback_note: str = "borough"


@dataclass(frozen=True)
class Location:
    precision: str                  # postcode | street | borough | none
    easting: float | None
    northing: float | None
    borough: str | None
    confidence: int
    note: str                       # how it was located, for attributes.location_method


@dataclass(frozen=True)
class Street:
    name: str
    easting: float
    northing: float
    points: int
    spread_m: float


@dataclass
class Gazetteer:
    """Street and place names per borough (from ``gazetteer_streets``), with a by-street-type index for fuzzy."""

    version: object
    streets: dict[str, dict[str, Street]] = field(default_factory=dict)     # borough -> key -> street
    by_type: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (borough, last word) -> keys

    @classmethod
    def load(cls, cur, version) -> "Gazetteer":
        cur.execute("SELECT borough_code, name_key, name, easting, northing, points, spread_m FROM gazetteer_streets")
        gazetteer = cls(version)
        for borough, key, name, east, north, points, spread in cur.fetchall():
            gazetteer.streets.setdefault(borough, {})[key] = Street(name, east, north, points, spread)
            gazetteer.by_type.setdefault((borough, key.rsplit(" ", 1)[-1]), []).append(key)
        return gazetteer

    def match(self, text: str, boroughs: tuple[str, ...], home: str | None) -> tuple[str, Street, int, str] | None:
        """(borough, street, confidence, how) of the best name in ``text`` within ``boroughs``, or None."""
        tokens = normalise_name(text).split()
        if not tokens:
            return None
        whole = " ".join(tokens)
        # Exact: the whole text, then names inside it, longest first.
        for n in range(min(len(tokens), 8), 0, -1):
            for i in range(len(tokens) - n + 1):
                key = " ".join(tokens[i:i + n])
                if n == 1 and not _distinctive_word(key):
                    continue
                found = [(b, self.streets[b][key]) for b in boroughs if key in self.streets.get(b, {})]
                if found:
                    score = 85 if key == whole else 75 if n > 1 else 60
                    how = "exact name" if key == whole else f"name {key!r} in the text"
                    return self._choose(found, home, score, how)
        # Fuzzy: phrases ending in a street type against names of that type and a similar length.
        best: tuple[float, str, list] | None = None
        for n in range(min(len(tokens), 6), 1, -1):
            for i in range(len(tokens) - n + 1):
                phrase = tokens[i:i + n]
                if phrase[-1] not in STREET_TYPES:
                    continue
                key = " ".join(phrase)
                for b in boroughs:
                    for candidate in self.by_type.get((b, phrase[-1]), ()):
                        if abs(len(candidate) - len(key)) > 3:
                            continue
                        ratio = difflib.SequenceMatcher(None, key, candidate).ratio()
                        if ratio >= FUZZY_CUTOFF and (best is None or ratio > best[0] + 1e-9):
                            best = (ratio, candidate, [(b, self.streets[b][candidate])])
                        elif best is not None and candidate == best[1] and abs(ratio - best[0]) < 1e-9:
                            best[2].append((b, self.streets[b][candidate]))
        if best is not None:
            ratio, candidate, found = best
            return self._choose(found, home, round(60 * ratio), f"fuzzy {ratio:.2f} to {candidate!r}")
        return None

    @staticmethod
    def _choose(found: list[tuple[str, Street]], home: str | None, score: int, how: str):
        if len(found) > 1:
            mine = [f for f in found if f[0] == home]
            if not mine:
                return None     # the same name in several boroughs and none is the hospital's: ambiguous
            how += f" (also in {len(found) - 1} other borough(s) of the catchment; the site's own taken)"
            found, score = mine, score - 15
        borough, street = found[0]
        if street.spread_m > 1500:
            score -= 20
        elif street.spread_m > 500:
            score -= 10
        return borough, street, max(5, min(95, score)), how


# Words of six letters or more that free text is full of and a one-word place name never is.
EVERYDAY_WORDS = {"outside", "behind", "opposite", "between", "station", "corner", "junction", "nightclub",
                  "takeaway", "doorway", "stairwell", "school", "estate", "street", "friends", "around"}


def _distinctive_word(word: str) -> bool:
    """A one-word name worth matching on its own ("Bishopsgate", "A205"), not an everyday word."""
    return bool(re.fullmatch(r"[ab]\d{1,4}", word)) or (
        len(word) >= 6 and word not in STREET_TYPES and word not in EVERYDAY_WORDS)


_gazetteers: dict[str, Gazetteer] = {}
_catchments: dict[tuple[str, float, float], tuple[str, ...]] = {}


def gazetteer_for(cur, cache_key: str) -> Gazetteer:
    """The gazetteer, re-read only when it has been refreshed since (cached per database)."""
    cur.execute("SELECT max(refreshed_at) FROM gazetteer_refreshes")
    version = cur.fetchone()[0]
    cached = _gazetteers.get(cache_key)
    if cached is None or cached.version != version:
        cached = _gazetteers[cache_key] = Gazetteer.load(cur, version)
    return cached


def catchment(cur, cache_key: str, near: tuple[float, float]) -> tuple[str, ...]:
    """Boroughs within CATCHMENT_M of a site (British National Grid metres), nearest first."""
    key = (cache_key, round(near[0]), round(near[1]))
    if key not in _catchments:
        cur.execute("""SELECT code FROM areas WHERE level = 'borough'
                         AND ST_DWithin(geom, ST_SetSRID(ST_MakePoint(%s, %s), 27700), %s)
                       ORDER BY ST_Distance(geom, ST_SetSRID(ST_MakePoint(%s, %s), 27700)), code""",
                    (near[0], near[1], CATCHMENT_M, near[0], near[1]))
        _catchments[key] = tuple(r[0] for r in cur.fetchall())
    return _catchments[key]


def locate_requests(cur, cache_key: str, requests: dict[int, LocationRequest]) -> dict[int, Location]:
    """Resolve a drop's requests (line number -> request) as the module docstring describes."""
    wanted = {r.postcode for r in requests.values() if r.postcode}
    for r in requests.values():
        wanted.update(f"{a} {b}" for a, b in POSTCODE_IN_TEXT.findall(r.text.upper()))
    postcodes = {}
    if wanted:
        cur.execute("""SELECT postcode, easting, northing, laua_code, terminated IS NOT NULL FROM postcodes
                       WHERE postcode = ANY(%s)""", (sorted(wanted),))
        postcodes = {row[0]: row[1:] for row in cur.fetchall()}
    gazetteer = gazetteer_for(cur, cache_key) if any(r.text for r in requests.values()) else None
    located = {}
    for line_no, request in requests.items():
        boroughs = request.boroughs
        if request.near is not None:
            boroughs = catchment(cur, cache_key, request.near) or boroughs
        located[line_no] = _locate(request, boroughs, postcodes, gazetteer)
    return located


def _locate(request: LocationRequest, boroughs: tuple[str, ...], postcodes: dict, gazetteer) -> Location:
    notes = []
    if request.postcode:
        found = postcodes.get(request.postcode)
        if found is not None:
            east, north, laua, terminated = found
            confidence = 75 if terminated else 90
            note = f"postcode {request.postcode}" + (" (terminated)" if terminated else "")
            if request.fallback_borough and laua != request.fallback_borough:
                confidence = 60
                note += f" (in {laua}, the record says {request.fallback_borough})"
            return Location("postcode", east, north, laua, confidence, note)
        notes.append(f"postcode {request.postcode} not in the postcode directory")
    if request.text:
        for a, b in POSTCODE_IN_TEXT.findall(request.text.upper()):
            found = postcodes.get(f"{a} {b}")
            if found is not None and found[2] in boroughs:
                east, north, laua, terminated = found
                return Location("postcode", east, north, laua, 70 if terminated else 85,
                                f"postcode {a} {b} in the text")
        if gazetteer is not None and boroughs:
            match = gazetteer.match(request.text, boroughs, request.home_borough)
            if match is not None:
                borough, street, confidence, how = match
                return Location("street", street.easting, street.northing, borough, confidence,
                                f"gazetteer: {street.name} ({borough}), {how}")
        notes.append("location text not matched in the gazetteer" if boroughs else "no boroughs to match the text in")
    suffix = f" ({'; '.join(notes)})" if notes else ""
    if request.fallback_borough:
        return Location("borough", None, None, request.fallback_borough, request.fallback_confidence,
                        request.fallback_note + suffix)
    return Location("none", None, None, None, DEFAULT_CONFIDENCE["none"], "none" + suffix)


# -- the gazetteer's upkeep ----------------------------------------------------------------------------------

@dataclass
class GazetteerRefresh:
    streets: int
    source_points: int
    seconds: float

    def summary(self) -> str:
        return (f"gazetteer refreshed: {self.streets:,} street and place names from {self.source_points:,} "
                f"police.uk snap points in {self.seconds:.1f} s")


def refresh_gazetteer(url: str) -> GazetteerRefresh:
    """Rebuild ``gazetteer_streets`` from the police.uk incidents in the store, in one transaction (readers
    keep the previous gazetteer until it commits). One pass over police.uk's rows grouped by borough, location
    text and point; names are normalised and aggregated here."""
    import psycopg2

    from db import libpq_dsn

    started = time.monotonic()
    conn = psycopg2.connect(libpq_dsn(url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET LOCAL jit = off")
            cur.execute("""SELECT borough_code, attributes->>'location', round(ST_X(geom)), round(ST_Y(geom)),
                                  count(*)
                           FROM incidents WHERE supplier = 'police_uk' AND geom IS NOT NULL
                             AND borough_code IS NOT NULL AND attributes ? 'location'
                           GROUP BY 1, 2, 3, 4""")
            points: dict[tuple[str, str], list[tuple[float, float, int]]] = defaultdict(list)
            spellings: dict[tuple[str, str], Counter] = defaultdict(Counter)
            source_points = 0
            for borough, location, east, north, n in cur:
                name = _PREFIX.sub("", location or "").strip()
                key = normalise_name(name)
                if not key or key in POLICE_UK_PLACE_TYPES:
                    continue
                points[(borough, key)].append((float(east), float(north), n))
                spellings[(borough, key)][name] += n
                source_points += 1
            rows = []
            for (borough, key), pts in points.items():
                ce = sum(p[0] for p in pts) / len(pts)
                cn = sum(p[1] for p in pts) / len(pts)
                spread = max(math.hypot(p[0] - ce, p[1] - cn) for p in pts)
                rows.append((borough, key, spellings[(borough, key)].most_common(1)[0][0], round(ce, 1),
                             round(cn, 1), len(pts), sum(p[2] for p in pts), round(spread, 1)))
            cur.execute("DELETE FROM gazetteer_streets")
            cur.execute("""INSERT INTO gazetteer_streets (borough_code, name_key, name, easting, northing, points,
                                                          incidents, spread_m)
                           SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[],
                                                %s::int[], %s::int[], %s::float8[])""",
                        [list(col) for col in zip(*rows)] if rows else [[]] * 8)
            seconds = time.monotonic() - started
            cur.execute("""INSERT INTO gazetteer_refreshes (refreshed_at, streets, source_points, seconds)
                           VALUES (clock_timestamp(), %s, %s, %s)""", (len(rows), source_points, seconds))
    finally:
        conn.close()
    return GazetteerRefresh(len(rows), source_points, seconds)
