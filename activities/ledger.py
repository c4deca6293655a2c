"""The drill ledger: every finished drill or recovery appended where an auditor can query it."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.boundary import activity_boundary
from activities.models import LedgerEntry, LedgerReceipt
from adapters.ledger import open_ledger
from domain.errors import DrillError, ErrorCode
from domain.ledger import LedgerRecord

_log = structlog.get_logger("pitrdrill.ledger")


class LedgerActivities:
    def __init__(self, ledger: str) -> None:
        self._ledger = open_ledger(ledger)

    @activity.defn(name="append_to_ledger")
    @activity_boundary
    def append_to_ledger(self, entry: LedgerEntry) -> LedgerReceipt:
        record = LedgerRecord.of(entry.kind, entry.report, appended_at=datetime.now(UTC))
        try:
            appended = self._ledger.append(record)
        except DrillError as error:
            if error.code != ErrorCode.LEDGER_UNAVAILABLE:
                raise
            # A shared ledger database may be back in a second: retried, unlike other
            # DrillErrors, so that the audit trail does not lose the drill.
            raise ApplicationError(error.message, error.hint, type=str(error.code)) from None
        _log.info("appended to the ledger" if appended else "already in the ledger",
                  ledger=self._ledger.where, run_id=record.run_id, status=record.status)
        return LedgerReceipt(ledger=self._ledger.where, appended=appended)
