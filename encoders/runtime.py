"""Which runtime runs the towers on this machine, and the ONNX Runtime plumbing.

torch is the reference: it trains, it runs on CUDA, and every exported graph is
made from its modules. On the CPU the same graphs run faster under ONNX Runtime
(measured in the README, "Encoder runtimes"): the image tower exported as is
(identical outputs), the text tower optionally with int8 dynamic quantization.
``CROSSFEED_ENCODER_RUNTIME`` chooses: ``auto`` (ONNX Runtime on the CPU when
``onnxruntime`` is importable, torch on CUDA), ``torch`` or ``onnx``.

Graphs are exported at first use into a cache directory, named by a digest of
the weights, the export recipe and the torch and ONNX Runtime versions, so a
worker exports once and every later start (and every other worker on the
machine) loads the cached file. Export needs no network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from crossfeed.exceptions import ConfigError

log = logging.getLogger(__name__)

RuntimeName = Literal["torch", "onnx"]
RUNTIMES = ("auto", "torch", "onnx")
TEXT_QUANTS = ("int8", "int8-ffn-fp32", "none")
# Bump when the exported graphs change (wrapper modules, opset, quantization recipe):
# cached files of an older recipe are then never reused.
EXPORT_RECIPE = "crossfeed-onnx-v2"
OPSET = 17
CACHE_SUBDIR = ".onnx"  # under the models directory; list_versions skips dot-directories


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime the towers use and why (logged, and shown by ``info()``)."""

    name: RuntimeName
    reason: str


def onnxruntime_version() -> str | None:
    """The installed ONNX Runtime's version, or None when it cannot be imported."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


def choose_runtime(setting: str, device: str) -> RuntimeChoice:
    """``CROSSFEED_ENCODER_RUNTIME`` on ``device`` -> the runtime of the towers.

    ``auto`` never fails (torch when ONNX Runtime cannot run here); an explicit
    ``onnx`` that cannot be honoured is a configuration error.
    """
    value = (setting or "auto").strip().lower()
    if value not in RUNTIMES:
        raise ConfigError(f"CROSSFEED_ENCODER_RUNTIME must be one of {RUNTIMES}, not {setting!r}")
    if value == "torch":
        return RuntimeChoice("torch", "CROSSFEED_ENCODER_RUNTIME=torch")
    if device != "cpu":
        if value == "onnx":
            raise ConfigError(
                f"CROSSFEED_ENCODER_RUNTIME=onnx runs the towers on the CPU, but the device is "
                f"{device}: use torch there (or CROSSFEED_DEVICE=cpu)"
            )
        return RuntimeChoice("torch", f"auto: torch on {device}")
    version = onnxruntime_version()
    if version is None:
        if value == "onnx":
            raise ConfigError("CROSSFEED_ENCODER_RUNTIME=onnx but onnxruntime is not installed")
        return RuntimeChoice("torch", "auto: onnxruntime is not installed")
    return RuntimeChoice("onnx", f"{value}: onnxruntime {version} on cpu")


def cpu_thread_count(setting: int) -> int:
    """``CROSSFEED_CPU_THREADS``: > 0 as given, 0 = half the cores (at least one)."""
    return setting if setting > 0 else max(1, (os.cpu_count() or 2) // 2)


def cache_dir_for(setting: Path | None, models_dir: Path) -> Path:
    """Where exported graphs live: the setting, else ``<models_dir>/.onnx``."""
    return Path(setting) if setting is not None else Path(models_dir) / CACHE_SUBDIR


def weights_digest(module: Any, *parts: str) -> str:
    """A digest of a torch module's tensors (names, shapes, dtypes, bytes), ``parts``,
    the export recipe and the torch and ONNX Runtime versions: the cache key of a graph."""
    import torch

    digest = hashlib.sha256()
    for part in (
        EXPORT_RECIPE,
        f"opset{OPSET}",
        torch.__version__,
        onnxruntime_version() or "",
        *parts,
    ):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


def export_cached(path: Path, build: Callable[[Path], None]) -> bool:
    """Make sure ``path`` exists: when missing, ``build`` writes it under a temporary
    name in the same directory, which is then renamed into place (atomic: workers
    starting together never read a half-written graph). True when it was built now."""
    if path.is_file():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        tmp = tmp_dir / path.name
        build(tmp)
        if not tmp.is_file():
            raise RuntimeError(f"the export wrote no {tmp.name}")
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return True


def make_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session of ``path`` with ``threads`` intra-op threads.

    One inter-op thread and no spinning: on a shared CPU, threads that spin while
    waiting slow every other process (the same reason torch gets half the cores).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
