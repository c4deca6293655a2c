"""The drill ledger: every finished drill or recovery appended where an auditor can query it."""

from __future__ import annotations

from temporalio import activity

from activities.boundary import activity_boundary
from activities.models import LedgerEntry, LedgerReceipt


class LedgerActivities:
    def __init__(self, ledger: str) -> None:
        self._ledger = ledger

    @activity.defn(name="append_to_ledger")
    @activity_boundary
    def append_to_ledger(self, entry: LedgerEntry) -> LedgerReceipt:
        return LedgerReceipt(ledger=self._ledger, appended=False)
