"""The record vocabulary of bench/: one typed record per phase, the key that names it across runs, the names of rows,
backends and tolerances. Every other bench module (phases, report, plots, compare) speaks through these types.

A record is one row of a table. JSON, CSV and Markdown are renderings of the same records; a field a record holds is
never recomputed by a reader. ``results.json`` is ``{"schema_version": N, "env": RunEnv, "records": [Record...]}``,
written by bench.report.files.write_results and read (strictly checked) by bench.report.load.load_results only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_VERSION = 2
STATUSES = ("ok", "skipped", "failed")

# The training ladder, in order: each rung adds one thing to the rung before it, so a reader sees what each is worth.
TRAIN_LADDER = ("tutorial_loop", "fused_optimizer", "no_host_read", "fast_untuned", "fast", "compute")
TRAIN_ROWS = {
    "tutorial_loop": "the tutorial's own loop, as its code does it (DataLoader, default optimizer, its host reads, "
                     "prints and TensorBoard writes per step), under the run's maths policy like every rung (on CUDA "
                     "cudnn.benchmark on and TF32 off, where the tutorials ran PyTorch's defaults: benchmark off, "
                     "cuDNN TF32 on)",
    "fused_optimizer": "the tutorial's loop with PyTorch's fused optimizer kernel",
    "no_host_read": "the shared loop's step on the tutorial's DataLoader: no per-step host read, print or write",
    "fast_untuned": "the shared loop's step on the device-resident loader, default execution choices",
    "fast": "the shared loop's step on the device-resident loader, with the exact-step tuner's choice",
    "compute": "the same step on one batch already on the device, under the fast rung's execution choice (its label "
               "says which layout and compile ran): the one bound every rung's % of compute divides by",
}
# Inference backends in table order. bench.backends registers an implementation for each name it supports.
BACKEND_NAMES = ("eager", "compile", "cuda_graph", "aot_inductor", "onnxruntime", "onnxruntime-cuda",
                 "onnxruntime-int8", "onnxruntime-int8-dynamic", "openvino", "openvino-dynamic", "tensorrt", "noop")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
PARITY_ABS_TOLERANCE = 1e-4
# Accuracy change against eager fp32 (percentage points) a backend row may show before it is flagged.
ACCURACY_BUDGET_PTS = {"fp32": 0.1, "bf16": 0.5, "fp16": 0.5, "int8": 1.0}
# A percentile is printed only when it rests on enough calls: at least 10 / (1 - q) (p90: 100, p99: 1000).
PERCENTILE_MIN_CALLS = {50: 10, 90: 100, 99: 1000}
THROUGHPUT_DEFINITION = ("samples/s = batch size / median seconds per call (inference) or the median over timed "
                         "windows of samples stepped / window seconds (training); every 'vs' ratio divides medians")


@dataclass
class Record:
    """Fields every row has. ``PHASE`` names the table; ``KEY`` the fields that identify a row within it."""

    PHASE: ClassVar[str] = ""
    KEY: ClassVar[tuple[str, ...]] = ()

    model: str = ""
    device: str = ""
    status: str = "ok"  # one of STATUSES
    reason: str | None = None  # why, when not ok

    @property
    def phase(self) -> str:
        return self.PHASE

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def key(self) -> tuple:
        """What was measured, independent of the result: matches the same row across runs."""
        return (self.model, self.PHASE, *(getattr(self, f) for f in self.KEY))

    def describe(self) -> str:
        """A short label of the row's key fields beyond model and phase, e.g. ``fast b=64 bf16 channels_last``."""
        parts = []
        for name in self.KEY:
            value = getattr(self, name)
            if value in (None, False, "", "fp32"):
                continue
            if value is True:
                parts.append(name)
            elif name == "batch_size":
                parts.append(f"b={value}")
            elif name == "processes":
                parts.append(f"procs={value}")
            elif name == "compile":
                parts.append(f"compile={value}")
            else:
                parts.append(str(value))
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.PHASE, **dataclasses.asdict(self)}


@dataclass
class ModelRecord(Record):
    PHASE: ClassVar[str] = "model"

    dataset: str | None = None
    input_shape: str | None = None  # "CxHxW"
    params_total: int | None = None
    params_trainable: int | None = None
    flops_per_sample: float | None = None  # forward, torch.utils.flop_counter
    train_flops_per_sample: float | None = None  # forward + backward
    weights: str | None = None  # "checkpoint" | "random"
    checkpoint: str | None = None
    checkpoint_acc: float | None = None
    checkpoint_epoch: int | None = None  # epochs the checkpoint had trained
    pretrained: bool = False
    data: str | None = None  # "real" | "synthetic"
    data_dir: str | None = None  # the folder real data was read from
    data_subset: str | None = None  # a converted subset's label (zoo.mnist_subset); None: the full dataset


@dataclass
class TrainRecord(Record):
    PHASE: ClassVar[str] = "train"
    KEY: ClassVar[tuple[str, ...]] = ("row", "batch_size", "precision", "channels_last", "compile")

    row: str | None = None  # one of TRAIN_LADDER
    batch_size: int | None = None
    precision: str = "fp32"
    channels_last: bool = False
    compile: str | None = None  # torch.compile mode, or None
    data: str | None = None
    quick: bool = False
    threads: int | None = None
    tuned: dict[str, Any] | None = None  # the tuner's choice for "fast" (and the compute row it bounds)
    samples_per_s: float | None = None  # median over windows
    samples_per_s_iqr: float | None = None
    window_rates: list[float] = field(default_factory=list)  # raw samples: samples/s of every timed window
    samples_per_repeat: list[int] = field(default_factory=list)  # --repeat: window_rates per process, in order
    windows: int | None = None
    steps_per_window: int | None = None
    samples_stepped: int | None = None  # samples actually stepped in the timed windows (short batches counted)
    compile_s: float | None = None
    peak_mem_mb: float | None = None  # this row's peak (CUDA allocated; CPU RSS high-water mark reset per row)
    mem_delta_mb: float | None = None  # the peak above the row's starting point
    mem_held_mb: float | None = None  # what the row still holds after its build and first step, above its start
    gflops_per_s: float | None = None
    pct_of_peak: float | None = None  # achieved FLOP/s / the device's measured peak (env), as a fraction
    speedup_vs_tutorial_loop: float | None = None
    rung_gain: float | None = None  # samples/s over the previous ladder rung's
    fraction_of_compute: float | None = None  # samples/s over the compute bound's (same precision and variant)
    above_bound: bool = False  # above its compute bound by more than the noise: flagged, never a "% of compute"
    speedup_vs_fp32_compute: float | None = None
    # 95% intervals (bench.measure.stats.median_ratio_ci over the two rows' windows) of the ratios above
    speedup_lo: float | None = None
    speedup_hi: float | None = None
    rung_gain_lo: float | None = None
    rung_gain_hi: float | None = None
    # H1 (the fast row): the precision asked of fast / tutorial_loop (+-%), the interval's half-width reached, met
    target_pct: float | None = None
    reached_pct: float | None = None
    target_met: bool | None = None
    same_config_as: str | None = None  # the rung before runs this very configuration (the tuner kept the default)


@dataclass
class InferRecord(Record):
    PHASE: ClassVar[str] = "infer"
    KEY: ClassVar[tuple[str, ...]] = ("backend", "batch_size", "precision")

    backend: str | None = None  # one of BACKEND_NAMES
    batch_size: int | None = None
    precision: str = "fp32"
    threads: int | None = None
    clock: str | None = None  # how a call was timed, e.g. "perf_counter, device sync per call"
    n_calls: int | None = None
    latencies_ms: list[float] = field(default_factory=list)  # raw samples, one per timed call
    samples_per_repeat: list[int] = field(default_factory=list)  # --repeat: latencies_ms per process, in order
    p50_ms: float | None = None
    p90_ms: float | None = None  # None when n_calls < PERCENTILE_MIN_CALLS[90]
    p99_ms: float | None = None  # None when n_calls < PERCENTILE_MIN_CALLS[99]
    max_ms: float | None = None
    mean_ms: float | None = None
    iqr_ms: float | None = None
    samples_per_s: float | None = None  # batch_size / median seconds per call
    # CUDA rows whose backend runs on a stream torch can record events on (bench.measure.timing.DEVICE_CLOCK):
    device_p50_ms: float | None = None  # median device time per call (CUDA events), beside the wall p50
    device_iqr_ms: float | None = None
    device_n_calls: int | None = None
    back_to_back_samples_per_s: float | None = None  # calls issued back to back, one sync at the end
    speedup_vs_eager: float | None = None  # eager fp32 p50 / this p50, same batch size
    speedup_vs_eager_lo: float | None = None  # its 95% bootstrap interval over both rows' calls (None: not formed)
    speedup_vs_eager_hi: float | None = None
    # The headline race at this batch size (bench.measure.race; None: the row was not raced): "winner",
    # "runner-up", "raced" (still in at the end), "dropped" (clearly behind the leader) or "not eligible" (outside
    # its accuracy budget: it cannot win).
    race: str | None = None
    # The backend it was compared against: the leader (when it was dropped); on the winner's row, the runner-up.
    race_leader: str | None = None
    race_vs_leader: float | None = None  # this p50 / the leader's p50 (>= 1); on the winner's row, its margin
    race_vs_leader_lo: float | None = None  # the interval: 95%, or DROP_CONF for the one that dropped a row
    race_vs_leader_hi: float | None = None
    race_conf: float | None = None
    race_rounds: int | None = None  # interleaved rounds the row took part in
    race_precision_pct: float | None = None  # the target (--precision) and what the top two reached
    race_reached_pct: float | None = None
    race_target_met: bool | None = None
    gflops_per_s: float | None = None
    pct_of_peak: float | None = None
    compile_s: float | None = None  # one-off cost: compile, session creation, quantization, capture
    peak_mem_mb: float | None = None
    mem_delta_mb: float | None = None
    mem_device: str | None = None  # whose memory the two figures are ("cpu": host RSS, e.g. ORT's CPU provider)
    provider: str | None = None
    note: str | None = None
    # How the backend was set up for this row (static or dynamic shape, session options, bindings, the runtime's
    # read-back properties): every option that can change its speed. None in files written before it was recorded.
    options: dict[str, Any] | None = None
    # Accuracy on the same row as latency (over the test split, or a stated prefix of it).
    data: str | None = None  # "real" | "synthetic"
    weights: str | None = None  # "checkpoint" | "random"
    accuracy: float | None = None
    accuracy_delta_pts: float | None = None  # accuracy - eager fp32 accuracy, percentage points
    # Its paired 95% interval (bench.model.accuracy.paired_change) and the images that decide it; None in files
    # written before it was recorded.
    accuracy_delta_lo_pts: float | None = None
    accuracy_delta_hi_pts: float | None = None
    accuracy_gained: int | None = None  # images this row classifies right and eager fp32 wrong
    accuracy_lost: int | None = None  # images eager fp32 classifies right and this row wrong
    argmax_agreement: float | None = None  # with eager fp32
    agreement_samples: int | None = None
    max_abs_diff: float | None = None  # logits against eager fp32
    accuracy_budget_pts: float | None = None
    accuracy_ok: bool | None = None  # |delta| within the budget


RACE_STATES = ("winner", "runner-up", "raced", "dropped", "not eligible")  # InferRecord.race


@dataclass
class ParityRecord(Record):
    PHASE: ClassVar[str] = "parity"
    KEY: ClassVar[tuple[str, ...]] = ("backend",)

    backend: str = "onnxruntime"
    opset: int | None = None
    exporter: str | None = None
    exporter_fallback_reason: str | None = None
    export_s: float | None = None
    onnx_mb: float | None = None
    onnx_path: str | None = None
    checker: str | None = None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    max_abs_diff_b1_b3: float | None = None
    tolerance: float = PARITY_ABS_TOLERANCE
    parity_ok: bool | None = None
    dynamic_batch_ok: bool | None = None
    argmax_agreement: float | None = None
    agreement_samples: int | None = None
    data: str | None = None


@dataclass
class ScaleRecord(Record):
    PHASE: ClassVar[str] = "scale"
    KEY: ClassVar[tuple[str, ...]] = ("processes", "batch_size")

    processes: int | None = None
    batch_size: int | None = None  # per process
    batch_size_global: int | None = None
    dist_backend: str | None = None  # "gloo" | "nccl"
    threads_per_process: int | None = None
    data: str | None = None
    quick: bool = False
    samples_per_s: float | None = None
    samples_per_s_iqr: float | None = None
    window_rates: list[float] = field(default_factory=list)
    samples_per_repeat: list[int] = field(default_factory=list)  # --repeat: window_rates per process, in order
    windows: int | None = None
    steps_per_window: int | None = None
    ideal: str | None = None  # how the ideal is defined for this setup, e.g. "N x rate(1)" or "rate(1), same cores"
    ideal_samples_per_s: float | None = None
    scaling_efficiency: float | None = None  # samples_per_s / ideal_samples_per_s


@dataclass
class TtaRecord(Record):
    """Time to accuracy: train from scratch until the test accuracy first reaches ``target_acc``."""

    PHASE: ClassVar[str] = "tta"
    KEY: ClassVar[tuple[str, ...]] = ("row", "target_acc")

    row: str | None = None  # "shared_loop" | "tutorial_loop"
    target_acc: float | None = None
    reached: bool | None = None
    epochs: int | None = None
    samples_seen: int | None = None
    train_s: float | None = None  # wall seconds in training steps
    eval_s: float | None = None  # wall seconds evaluating, reported on its own
    wall_s: float | None = None
    final_acc: float | None = None
    batch_size: int | None = None
    data: str | None = None
    tuned: dict[str, Any] | None = None
    speedup_vs_tutorial_loop: float | None = None  # tutorial_loop train_s / this train_s
    wall_speedup_vs_tutorial_loop: float | None = None  # tutorial_loop wall_s / this wall_s (setup, checks included)
    target_source: str | None = None  # where target_acc comes from (the tutorial's printed number, a stated value)
    max_epochs: int | None = None  # the cap: reached=False when it hits first
    steps: int | None = None  # optimisation steps until the target (or the cap)
    eval_every_steps: int | None = None  # test-accuracy checks: every epoch, or every K steps for long epochs
    setup_s: float | None = None  # loaders, model, optimizer (and the tuner's probe): in wall_s, not in train_s
    tune_s: float | None = None  # the tuner's probe alone (part of setup_s)


@dataclass
class ServeRecord(Record):
    """One LoadGen scenario run of one backend (bench.phases.serve.phase): its verdict, raw latencies, settings, policy."""
    PHASE: ClassVar[str] = "serve"
    KEY: ClassVar[tuple[str, ...]] = ("backend", "precision", "scenario", "mode", "batching")

    backend: str | None = None
    precision: str = "fp32"
    scenario: str | None = None  # one of SERVE_SCENARIOS
    mode: str = "PerformanceOnly"  # LoadGen's TestMode: PerformanceOnly | AccuracyOnly
    batching: str | None = None  # the batcher's policy, e.g. "max_batch=32 delay_ms=0" ("off": max_batch=1)
    settings: dict[str, Any] = field(default_factory=dict)  # what LoadGen ran with, the budget, threads (ServeSettings)
    loadgen_result: str | None = None  # "VALID" or "INVALID: <what its summary says was not satisfied>"
    loadgen_log_dir: str | None = None  # its summary and detail logs, relative to OUT/<device>
    latencies_ms: list[float] = field(default_factory=list)  # raw: LoadGen's latency of every query, from its trace
    p50_ms: float | None = None
    p90_ms: float | None = None  # None with fewer queries than PERCENTILE_MIN_CALLS[90]
    p99_ms: float | None = None  # None with fewer queries than PERCENTILE_MIN_CALLS[99]
    samples_per_s: float | None = None  # LoadGen's completed samples per second
    mean_batch: float | None = None  # samples per backend call, as the batcher formed them
    max_rate_qps: float | None = None  # Server: highest probed rate whose p99 met the bound (None: none did)
    probes: list[dict[str, Any]] = field(default_factory=list)  # Server: every probe (serve_search.ServeProbe)
    accuracy: float | None = None  # AccuracyOnly: LoadGen's accuracy log decoded and scored
    closed_loop_accuracy: float | None = None  # the same backend's predict, closed loop, same samples
    argmax_agreement: float | None = None  # with that closed-loop predict (anything below 1.0 fails the row)
    agreement_samples: int | None = None
    provenance: str | None = None  # "weights random, data synthetic"
    note: str | None = None


SERVE_SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
RECORD_TYPES: dict[str, type[Record]] = {cls.PHASE: cls for cls in (ModelRecord, TrainRecord, InferRecord,
                                                                      ParityRecord, ScaleRecord, TtaRecord, ServeRecord)}


@dataclass
class RunEnv:
    """Where, when and how a run was made: the ``env`` block of results.json."""

    device: str = ""
    device_index: int | None = None  # the CUDA device the run made current (--device cuda:N)
    device_name: str = ""
    torch: str = ""
    torchvision: str = ""
    onnxruntime: str | None = None
    python: str = ""
    platform: str = ""
    cuda: str | None = None
    cpu_capability: str | None = None
    cpu_count: int | None = None
    threads: int | None = None  # torch intra-op threads for the run (--threads)
    memory_gb: float | None = None
    git_commit: str | None = None
    timestamp: str = ""
    command: str | None = None
    quick: bool = False
    repeat: int = 1  # fresh processes each repeated phase was measured in (--repeat); rows say how they split
    wall_s: float | None = None
    budget_s: float | None = None
    clock: str | None = None  # the one clock every latency row uses
    maths: dict[str, Any] = field(default_factory=dict)  # cudnn.benchmark, TF32 policy, ORT conv algo search ...
    calibration: dict[str, Any] = field(default_factory=dict)  # machine-speed probe: raw samples and medians
    peaks: dict[str, Any] = field(default_factory=dict)  # measured peak FLOP/s per precision, memory bandwidth
    skipped_precisions: dict[str, str] = field(default_factory=dict)  # precision -> why left out of the plan
    # The harness's own floor per call (bench.runner.env.harness_floor: the noop backend timed as a batch-1 row); empty
    # when the run had no infer phase, or in files written before it was measured.
    harness_floor: dict[str, Any] = field(default_factory=dict)
    planned_rows: int | None = None
    done_rows: int | None = None
    complete: bool = False  # False until the run finished every planned row
    notes: dict[str, Any] = field(default_factory=dict)
    # model -> where its data and weights came from (bench.context.Provenance), one entry per model built so far
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def reason_of(exc: BaseException | str) -> str:
    """One line saying why: the exception's type and the first line of its message."""
    if isinstance(exc, str):
        return exc
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}".rstrip(": ")


def not_ok(cls: type[Record], model: str, device: str, exc: BaseException | str, *, status: str = "failed",
           **fields: Any) -> Record:
    """A failed (or skipped) row of ``cls`` with its key fields and the reason."""
    return cls(model=model, device=device, status=status, reason=reason_of(exc), **fields)
