"""The phase interface: a phase plans its rows, measures one model into records, and owns its failure handling.

Adding a phase is one new module with a ``Phase`` subclass plus one line in ``bench.phases.PHASES``. A phase that
times rows calls the ``--profile`` hooks (bench.profile.take, named here) once a row's timed calls are done.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from bench.context import BenchContext, ModelSession
from bench.profile.take import profile_cost_s, profile_row, profile_train_rows  # noqa: F401 - --profile's hooks
from bench.records import Record
from bench.schedule.budget import TIER_CORE, RowCost

DEFAULT_ROW_S = 5.0  # the price of a row whose phase does not price its rows (it cannot be dropped either)
Priced = tuple[list[RowCost], dict[str, float]]  # the rows, priced, and their shared one-off costs (bench.schedule.budget)


def kept(ctx: BenchContext, name: str, phase: str, label: str) -> bool:
    """Whether the run's fitted plan measures this row (True without a budget)."""
    return ctx.budget is None or ctx.budget.keeps(name, phase, label)


class Phase(ABC):
    name: ClassVar[str]
    record_type: ClassVar[type[Record]]
    in_quick: ClassVar[bool] = True  # part of a --quick run by default
    in_default: ClassVar[bool] = True  # part of a plain run by default

    @abstractmethod
    def planned_rows(self, name: str, ctx: BenchContext) -> int:
        """How many records this phase will write for model ``name`` (progress, ETA and 'incomplete' accounting)."""

    def row_costs(self, name: str, ctx: BenchContext, prices) -> Priced:
        """Every planned row of model ``name`` priced on this machine (``prices``: bench.schedule.pricing.Prices), with the
        one-off costs its rows share. A phase that prices its rows also honours the plan's drops (``kept``); this
        default prices each row DEFAULT_ROW_S and lets the budget drop none of them."""
        return [RowCost(name, self.name, f"row {i}", DEFAULT_ROW_S, DEFAULT_ROW_S, TIER_CORE, droppable=False)
                for i in range(self.planned_rows(name, ctx))], {}

    @abstractmethod
    def run(self, session: ModelSession, ctx: BenchContext) -> list[Record]:
        """Every record of this phase for one model. A row that cannot be measured is a failed or skipped record
        with its reason; the run goes on. Only bugs escape (the driver turns them into ``failed`` below)."""

    def failed(self, session: ModelSession, ctx: BenchContext, exc: BaseException) -> list[Record]:
        """Records for a phase that raised: one failed row, unless a phase knows its planned rows' keys."""
        from bench.records import not_ok

        return [not_ok(self.record_type, session.name, ctx.device.type, exc)]
