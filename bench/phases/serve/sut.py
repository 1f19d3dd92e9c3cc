"""The system under test that MLPerf LoadGen drives: a dynamic batcher in front of one backend's ``predict``.

Threads, the same for every backend: LoadGen's own C++ threads issue the queries (its issue thread calls
``issue_queries``, which only appends to the batcher's queue and returns) and write its logs; ONE Python worker
thread takes batches from the queue, runs ``backend.predict`` on the stacked inputs and answers LoadGen with
``QuerySamplesComplete``; the backend computes with the run's intra-op threads (``--threads``: torch, ONNX Runtime and
OpenVINO alike); the main thread waits in ``StartTestWithLogSettings``. The batcher (like Triton's dynamic batcher)
takes up to ``max_batch`` queued samples and waits at most ``max_queue_delay_ms`` after the oldest one's arrival for
more; max_batch=1 is batching off. The inputs are the evaluated test samples, resident on the run's device before the
test starts (the QSL's load/unload have nothing to do), so a query costs the batch's gather, the backend call and the
response.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.phases.serve import logs as serve_logs
from zoo.atomic import atomic_write_text

INSTALL = 'pip install -e ".[loadgen]"'


def loadgen_missing() -> str | None:
    """Why LoadGen cannot be used here, with the install command, or None."""
    try:
        import mlperf_loadgen  # noqa: F401
    except Exception as exc:  # a wheel whose native library fails to load is as unusable as a missing one
        return f"mlperf_loadgen is not usable ({type(exc).__name__}: {exc}): {INSTALL}"
    return None


@dataclass(frozen=True)
class BatchPolicy:
    max_batch: int = 1
    max_queue_delay_ms: float = 0.0

    def describe(self) -> str:
        if self.max_batch == 1:
            return "off"
        return f"max_batch={self.max_batch} delay_ms={self.max_queue_delay_ms:g}"


class DynamicBatcher:
    """A queue of samples and the rule that turns it into batches (thread-safe; ``clock`` is seconds)."""

    def __init__(self, policy: BatchPolicy, clock: Callable[[], float] = time.perf_counter):
        self.policy, self.clock = policy, clock
        self.cond = threading.Condition()
        self.items: deque = deque()
        self.closed = False

    def put(self, items: Sequence[Any]) -> None:
        now = self.clock()
        with self.cond:
            self.items.extend((item, now) for item in items)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def next_batch(self) -> list[Any] | None:
        """Up to max_batch samples, oldest first: as soon as max_batch are queued, or max_queue_delay_ms after the
        oldest arrived, whichever is first. None once closed and empty."""
        with self.cond:
            while not self.items and not self.closed:
                self.cond.wait()
            if not self.items:
                return None
            deadline = self.items[0][1] + self.policy.max_queue_delay_ms / 1e3
            while len(self.items) < self.policy.max_batch and not self.closed:
                left = deadline - self.clock()
                if left <= 0:
                    break
                self.cond.wait(left)
            n = min(self.policy.max_batch, len(self.items))
            return [self.items.popleft()[0] for _ in range(n)]


class Worker:
    """The one thread that serves batches: gather the inputs, ``predict``, answer with the float32 logits."""

    def __init__(self, predict: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, policy: BatchPolicy,
                 respond: Callable[[list[Any], np.ndarray], None]):
        self.predict, self.inputs, self.respond = predict, inputs, respond
        self.batcher = DynamicBatcher(policy)
        self.batch_sizes: list[int] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.loop, name="serve-worker", daemon=True)

    def loop(self) -> None:
        with torch.inference_mode():  # thread-local: entered in the thread that calls the backend
            while True:
                batch = self.batcher.next_batch()
                if batch is None:
                    return
                self.batch_sizes.append(len(batch))
                self.serve(batch)

    def serve(self, batch: list[Any]) -> None:
        try:
            index = torch.tensor([s.index for s in batch], device=self.inputs.device)
            logits = self.predict(self.inputs.index_select(0, index))
            out = np.ascontiguousarray(logits.detach().float().cpu().numpy(), dtype=np.float32)
        except Exception as exc:  # answer anyway, or LoadGen waits forever; the row is failed with this reason
            self.error = self.error or exc
            out = np.zeros((len(batch), 1), dtype=np.float32)
        self.respond(batch, out)

    def __enter__(self) -> Worker:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.batcher.close()
        self.thread.join()


def respond_to_loadgen(batch: list[Any], logits: np.ndarray) -> None:
    """QuerySamplesComplete with each sample's row of ``logits`` (LoadGen copies the bytes in AccuracyOnly mode)."""
    import mlperf_loadgen as lg

    row = logits.strides[0]
    base = logits.ctypes.data
    lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, base + i * row, row) for i, s in enumerate(batch)])


@dataclass
class LoadGenRun:
    """What one LoadGen test left: its summary, every query's latency, the batches served, the responses."""

    summary: serve_logs.Summary
    latencies_ns: np.ndarray
    batch_sizes: list[int]
    responses: dict[int, np.ndarray] | None  # AccuracyOnly: qsl index -> logits
    wall_s: float


def run_test(settings: Any, predict: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
             policy: BatchPolicy, *, performance_count: int, classes: int, keep_dir: str | None) -> LoadGenRun:
    """One LoadGen test (``settings``: an mlperf_loadgen.TestSettings) against ``predict``; its summary and detail
    logs are copied into ``keep_dir`` (when given). RuntimeError when the worker's backend raised."""
    import mlperf_loadgen as lg

    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        log = lg.LogSettings()
        log.log_output.outdir = tmp
        log.log_output.copy_summary_to_stdout = False
        log.enable_trace = True  # the per-sample latencies come from the trace
        with Worker(predict, inputs, policy, respond_to_loadgen) as worker:
            sut = lg.ConstructSUT(worker.batcher.put, lambda: None)
            qsl = lg.ConstructQSL(int(inputs.shape[0]), performance_count, lambda s: None, lambda s: None)
            t0 = time.perf_counter()
            try:
                lg.StartTestWithLogSettings(sut, qsl, settings, log)
            finally:
                wall_s = time.perf_counter() - t0
                lg.DestroyQSL(qsl)
                lg.DestroySUT(sut)
        if worker.error is not None:
            raise RuntimeError(f"the backend raised under load: {type(worker.error).__name__}: {worker.error}")
        if keep_dir is not None:
            keep_logs(tmp, keep_dir)
        return LoadGenRun(summary=serve_logs.parse_summary(_read(tmp, serve_logs.SUMMARY)),
                          latencies_ns=serve_logs.read_trace(os.path.join(tmp, serve_logs.TRACE)),
                          batch_sizes=worker.batch_sizes, responses=_responses(settings, tmp, classes),
                          wall_s=wall_s)


def _responses(settings: Any, folder: str, classes: int) -> dict[int, np.ndarray] | None:
    import mlperf_loadgen as lg

    if settings.mode != lg.TestMode.AccuracyOnly:
        return None
    return serve_logs.read_accuracy_log(os.path.join(folder, serve_logs.ACCURACY), classes)


def _read(folder: str, name: str) -> str:
    with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
        return f.read()


def keep_logs(src: str, dest: str) -> None:
    """Copy LoadGen's small text logs (summary, detail) from ``src`` to ``dest``, each atomically."""
    os.makedirs(dest, exist_ok=True)
    for name in serve_logs.KEPT_LOGS:
        path = os.path.join(src, name)
        if os.path.exists(path):
            atomic_write_text(os.path.join(dest, name), _read(src, name))
