"""Custom search attributes: drills filtered by database, target mode and status in the UI."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PITR_DATABASE = SearchAttributeKey.for_keyword("PitrDatabase")
PITR_TARGET_MODE = SearchAttributeKey.for_keyword("PitrTargetMode")
PITR_STATUS = SearchAttributeKey.for_keyword("PitrStatus")

ALL = (PITR_DATABASE, PITR_TARGET_MODE, PITR_STATUS)
