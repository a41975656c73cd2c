"""Every supplier file format the pipeline knows. Adding a supplier: one loader module plus a line here
(and its category mapping, seeded by a migration)."""
from loaders.lfb import LfbIncidentFormat
from loaders.police_uk import PoliceUkStreetFormat
from loaders.tfl_bus import TflBusSafetyFormat

SUPPLIER_FORMATS = [PoliceUkStreetFormat, LfbIncidentFormat, TflBusSafetyFormat]
