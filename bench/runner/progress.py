"""What a run is doing, on stderr: one line per finished row, and a pulse while a phase measures.

On a terminal the pulse is a tqdm bar (rows done / planned, the current model and phase, what runs inside it, an ETA)
redrawn every second; elsewhere (a log file, CI) it is a plain line when nothing was printed for ``pulse_s`` seconds
(PLAIN_PULSE_S, under the 10 s a user should ever wait for a sign of life). What runs inside a phase is the phase's
own word (``detail``: e.g. "round 3 of 5-9, 9 rows in the round" while a round-robin times its windows). The ETA is
the priced plan's (bench.schedule.budget.Budget.eta_s: this machine's prices corrected by what finished pairs really took)
when the run has a budget; without one, the measured seconds per unit of planned cost (bench.schedule.budget.pair_costs)
times the cost still to run.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from bench.records import InferRecord, ModelRecord, ParityRecord, Record
from bench.schedule.budget import Pair

TTY_REFRESH_S = 1.0
PLAIN_PULSE_S = 5.0


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def row_result(rec: Record) -> str:
    """The figure a row line ends with: the row's headline number, or why it is not ok."""
    if not rec.ok:
        return f"{rec.status}: {rec.reason or ''}"
    if isinstance(rec, ModelRecord):
        flops = f"{rec.flops_per_sample / 1e6:.3g} MFLOPs/sample" if rec.flops_per_sample else "FLOPs unknown"
        return f"{rec.params_total or 0:,} params, {flops}, {rec.weights} weights, {rec.data} data"
    if isinstance(rec, InferRecord) and rec.p50_ms is not None:
        return f"{rec.p50_ms:.3g} ms p50 ({rec.n_calls} calls)"
    if isinstance(rec, ParityRecord) and rec.max_abs_diff is not None:
        return f"max abs diff {rec.max_abs_diff:.2e} " + ("PASS" if rec.parity_ok else "FAIL")
    rate = getattr(rec, "samples_per_s", None)
    return f"{rate:,.0f} samples/s" if rate is not None else "ok"


class Progress:
    """Row lines and a pulse with an ETA. ``rows``/``costs``: planned rows and cost weight per (model, phase)."""

    def __init__(self, rows: dict[Pair, int], costs: dict[Pair, float], *, models: int, budget_s: float | None,
                 stream: TextIO | None = None, tty: bool | None = None, pulse_s: float | None = None,
                 clock: Callable[[], float] = time.perf_counter, detail: Callable[[], str | None] = lambda: None,
                 eta: Callable[[], float | None] | None = None):
        self.detail, self.eta = detail, eta
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.pulse_s = pulse_s or (TTY_REFRESH_S if self.tty else PLAIN_PULSE_S)
        self.costs, self.budget_s, self.clock = costs, budget_s, clock
        self.planned = models + sum(rows.values())  # every model adds its "model" record
        self.done, self.done_cost = 0, 0.0
        self.current: Pair | None = None
        self.t0 = self.pair_t0 = self.last_line = clock()
        self.lock = threading.Lock()
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.planned, file=self.stream, dynamic_ncols=True, leave=False,
                            bar_format="{desc} {bar} {n_fmt}/{total_fmt} rows [{elapsed}{postfix}]")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._pulse_loop, name="bench-progress", daemon=True)
        self.thread.start()

    # -- what the driver reports
    def start(self, model: str, phase: str) -> None:
        with self.lock:
            self.current, self.pair_t0 = (model, phase), self.clock()
            self._refresh()

    def finish(self, model: str, phase: str) -> None:
        with self.lock:
            self.done_cost += self.costs.get((model, phase), 0.0)
            self.current = None
            self._refresh()

    def rows_done(self, records: list[Record]) -> None:
        for rec in records:
            with self.lock:
                self.done += 1
                self.planned = max(self.planned, self.done)
                label = " ".join(x for x in (rec.model, rec.phase, rec.describe()) if x)
                self._line(f"[{self.done}/{self.planned}] {label} ... {row_result(rec)}")

    def message(self, text: str) -> None:
        with self.lock:
            self._line(text)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        with self.lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    # -- the pulse
    def eta_s(self) -> float | None:
        if self.eta is not None:
            left = self.eta()
            return None if left is None else max(0.0, left)
        now = self.clock()
        if self.done_cost > 0:
            rate = (now - self.t0) / self.done_cost  # seconds per unit of cost, as measured so far
            current = self.costs.get(self.current, 0.0) if self.current else 0.0
            after = sum(self.costs.values()) - self.done_cost - current
            in_pair = now - self.pair_t0 if self.current else 0.0
            # The running phase counts what it has left, never less than nothing, so an overrun does not eat the
            # estimate of the phases after it.
            return max(0.0, rate * current - in_pair) + rate * after
        if self.budget_s is not None:
            return max(0.0, self.budget_s - (now - self.t0))
        return None

    def status(self) -> str:
        """e.g. ``alexnet_mnist train (1m20s): round 3 of 5-9, 9 rows in the round; 12/60 rows, ETA 4m10s``."""
        detail = self.detail()
        where = f"{self.current[0]} {self.current[1]} ({_clock_text(self.clock() - self.pair_t0)})" \
            if self.current else "between phases"
        where = f"{where}: {detail}" if detail and self.current else detail or where
        return f"{where}; {self.done}/{self.planned} rows, ETA {_clock_text(self.eta_s())}"

    def _pulse_loop(self) -> None:
        while not self.stop.wait(self.pulse_s):
            with self.lock:
                if self.bar is not None:
                    self._refresh()
                elif self.clock() - self.last_line >= self.pulse_s:
                    self._line(f"  ... {self.status()}")

    def _refresh(self) -> None:
        if self.bar is None:
            return
        self.bar.n = self.done
        self.bar.total = self.planned
        where = f"{self.current[0]} {self.current[1]}" if self.current else "bench"
        detail = self.detail()
        self.bar.set_description_str(f"{where}: {detail}" if detail else where, refresh=False)
        self.bar.set_postfix_str(f"ETA {_clock_text(self.eta_s())}", refresh=False)
        self.bar.refresh()

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
            self._refresh()
        else:
            print(text, file=self.stream, flush=True)
        self.last_line = self.clock()
