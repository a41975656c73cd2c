"""Every supplier file format the pipeline knows. Adding a supplier: one loader module plus a line here
(and its category mapping, seeded by a migration)."""
from loaders.police_uk import PoliceUkStreetFormat

SUPPLIER_FORMATS = [PoliceUkStreetFormat]
