"""Data connection: the canonical tables, readers (FHIR R4, CSV, CGM exports),
unit and code harmonization, and all-or-nothing ingest."""

from typing import TYPE_CHECKING

from twinloop._lazy import attach

if TYPE_CHECKING:
    from twinloop.connect.codes import CodeEntry as CodeEntry
    from twinloop.connect.codes import CodeMap as CodeMap
    from twinloop.connect.fhir import FhirRecords as FhirRecords
    from twinloop.connect.fhir import read_fhir as read_fhir
    from twinloop.connect.ingest import Ingested as Ingested
    from twinloop.connect.ingest import harmonize as harmonize
    from twinloop.connect.ingest import ingest as ingest
    from twinloop.connect.ingest import read_source as read_source
    from twinloop.connect.schema import DOSE_COLUMNS as DOSE_COLUMNS
    from twinloop.connect.schema import OBSERVATION_COLUMNS as OBSERVATION_COLUMNS
    from twinloop.connect.schema import Rejected as Rejected
    from twinloop.connect.schema import validate_doses as validate_doses
    from twinloop.connect.schema import validate_observations as validate_observations
    from twinloop.connect.tabular import ColumnMap as ColumnMap
    from twinloop.connect.tabular import read_cgm_csv as read_cgm_csv
    from twinloop.connect.tabular import read_csv as read_csv
    from twinloop.connect.units import convert as convert

__getattr__, __dir__, __all__ = attach(__name__, __file__)
