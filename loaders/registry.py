"""Every supplier file format the pipeline knows. Adding a supplier: one loader module plus a line here
(and its category mapping, seeded by a migration)."""
from loaders.istv import IstvFormat
from loaders.las import LasAssaultsFormat
from loaders.lfb import LfbIncidentFormat
from loaders.police_uk import PoliceUkStreetFormat
from loaders.police_uk_outcomes import PoliceUkOutcomesFormat
from loaders.police_uk_stop_search import PoliceUkStopSearchFormat
from loaders.tfl_bus import TflBusSafetyFormat

SUPPLIER_FORMATS = [PoliceUkStreetFormat, PoliceUkOutcomesFormat, PoliceUkStopSearchFormat, LfbIncidentFormat,
                    TflBusSafetyFormat, LasAssaultsFormat, IstvFormat]
