"""The towers under ONNX Runtime: graphs exported from the torch towers, run on the CPU.

Each ONNX tower is made from a loaded torch tower (:mod:`.image`, :mod:`.text`) and
keeps it as ``torch_tower`` (the reference, and the text tower's tokenizer). The
graph is exported once per weights into the cache directory (:mod:`.runtime`).

* Image: ``extract_features`` plus global average pooling, fp32; preprocessing is
  the torch tower's own :func:`~crossfeed.encoders.image.preprocess`.
* Text: the whole sentence-transformers module chain (transformer, pooling and
  normalisation as the model's ``modules.json`` defines them), fed by the model's
  own tokenizer (same truncation length, same padding); optionally int8 dynamic
  quantization of most weight matrices (per channel), which ONNX Runtime runs with
  integer matrix products (see :func:`_quantize_int8`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from crossfeed.encoders.image import CPU_MAX_BATCH, preprocess
from crossfeed.encoders.runtime import (
    OPSET,
    TEXT_QUANTS,
    export_cached,
    make_session,
    weights_digest,
)

if TYPE_CHECKING:
    from crossfeed.encoders.image import ImageTower
    from crossfeed.encoders.text import TextTower

log = logging.getLogger(__name__)


def _torch_export(module: Any, args: tuple[Any, ...], path: Path, names: list[str]) -> None:
    """Trace ``module`` on ``args`` into ``path``: every input's first two axes dynamic
    (batch, and sequence for token inputs), the output's batch axis dynamic."""
    import torch

    dynamic: dict[str, dict[int, str]] = {}
    for name, arg in zip(names, args, strict=True):
        dynamic[name] = {0: "batch"} if arg.dim() != 2 else {0: "batch", 1: "sequence"}
    dynamic["output"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=names,
            output_names=["output"],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,  # the TorchScript tracer: no onnxscript needed, measured to work
        )


class OnnxImageTower:
    """Pooled EfficientNet features from an exported graph (same contract as ImageTower)."""

    runtime = "onnx"

    def __init__(self, torch_tower: ImageTower, session: Any, path: Path) -> None:
        self.torch_tower = torch_tower
        self.arch = torch_tower.arch
        self.model_id = torch_tower.model_id
        self.dim = torch_tower.dim
        self.input_size = torch_tower.input_size
        self.device = "cpu"
        self.path = path
        self._session = session
        self._input = session.get_inputs()[0].name

    @classmethod
    def from_torch(cls, tower: ImageTower, cache_dir: Path, threads: int) -> OnnxImageTower:
        """Export ``tower`` (or reuse its cached graph) and open it with ``threads``."""
        import torch

        started = time.perf_counter()
        model = tower._model
        digest = weights_digest(model, "image", tower.arch, str(tower.input_size))
        path = Path(cache_dir) / f"image-{tower.arch}-{digest}.onnx"

        class _Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = model

            def forward(self, pixels: torch.Tensor) -> torch.Tensor:
                return self.net.extract_features(pixels).mean(dim=(2, 3))

        sample = torch.zeros(2, 3, tower.input_size, tower.input_size)
        exported = export_cached(path, lambda p: _torch_export(_Pooled(), (sample,), p, ["pixels"]))
        onnx_tower = cls(tower, make_session(path, threads), path)
        log.info(
            "image tower %s on onnxruntime (%s %s) in %.1f s",
            tower.model_id,
            "exported to" if exported else "cached",
            path,
            time.perf_counter() - started,
        )
        return onnx_tower

    def features(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """(n,) images -> (n, dim) float32 pooled features (not normalised)."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch_size = min(batch_size, CPU_MAX_BATCH)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = preprocess(chunk, self.input_size, self.arch)
            out[start : start + len(chunk)] = self._session.run(None, {self._input: batch})[0]
        return out


class OnnxTextTower:
    """Sentence embeddings from an exported sentence-transformers chain (as TextTower)."""

    def __init__(self, torch_tower: TextTower, session: Any, path: Path, quant: str) -> None:
        self.torch_tower = torch_tower
        self.model_id = torch_tower.model_id
        self.dim = torch_tower.dim
        self.device = "cpu"
        self.path = path
        self.quant = quant
        self.runtime = "onnx" if quant == "none" else f"onnx-{quant}"
        self._session = session
        self._inputs = [i.name for i in session.get_inputs()]

    @classmethod
    def from_torch(
        cls, tower: TextTower, cache_dir: Path, threads: int, quant: str = "int8"
    ) -> OnnxTextTower:
        """Export ``tower`` (fp32, then quantized when ``quant`` is ``int8``) or reuse the
        cached graph, and open it with ``threads``."""
        import torch

        if quant not in TEXT_QUANTS:
            raise ValueError(f"quant must be one of {TEXT_QUANTS}, not {quant!r}")
        started = time.perf_counter()
        model = tower._model
        digest = weights_digest(model, "text", str(model.max_seq_length))
        fp32 = Path(cache_dir) / f"text-{digest}.onnx"
        sample = _tokenize(model, ["a sample post 🔥 #tag", "hi"])
        names = [k for k, v in sample.items() if isinstance(v, torch.Tensor)]
        extra = {k: v for k, v in sample.items() if not isinstance(v, torch.Tensor)}

        class _Sentence(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = model

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                features = dict(zip(names, tensors, strict=True)) | extra
                return self.net(features)["sentence_embedding"]

        args = tuple(sample[k] for k in names)
        with _eager_attention(model):
            exported = export_cached(fp32, lambda p: _torch_export(_Sentence(), args, p, names))
        path = fp32
        if quant == "int8":
            fused = fp32.with_name(f"text-{digest}.fused.onnx")
            exported |= export_cached(fused, lambda p: _fuse_transformer(fp32, p, model))
            path = fp32.with_name(f"text-{digest}.int8.onnx")
            exported |= export_cached(path, lambda p: _quantize_int8(fused, p, keep_down=False))
        elif quant == "int8-ffn-fp32":
            path = fp32.with_name(f"text-{digest}.int8-ffn-fp32.onnx")
            exported |= export_cached(path, lambda p: _quantize_int8(fp32, p, keep_down=True))
        onnx_tower = cls(tower, make_session(path, threads), path, quant)
        log.info(
            "text tower %s on onnxruntime, %s (%s %s) in %.1f s",
            tower.model_id,
            quant,
            "exported to" if exported else "cached",
            path,
            time.perf_counter() - started,
        )
        return onnx_tower

    def features(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(n,) strings -> (n, dim) float32 embeddings, as ``SentenceTransformer.encode``:
        longest first (least padding), each batch tokenized by the model's tokenizer."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        model = self.torch_tower._model
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            tokens = _tokenize(model, [texts[i] for i in rows])
            feed = {name: tokens[name].numpy() for name in self._inputs}
            out[rows] = self._session.run(None, feed)[0]
        return out


def _tokenize(model: Any, texts: list[str]) -> dict[str, Any]:
    """The model's own tokenization (sentence-transformers 6: ``preprocess``; before
    that ``tokenize``): its tokenizer, truncation length and padding."""
    fn = getattr(model, "preprocess", None) or model.tokenize
    return dict(fn(texts))


@contextlib.contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """Trace the transformer with plain (eager) attention, whose graph ONNX Runtime's
    transformer optimizer recognises and fuses; the torch model is restored after."""
    auto = getattr(model[0], "auto_model", None) if len(model) else None
    config = getattr(auto, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if auto is None or before in (None, "eager") or not hasattr(auto, "set_attn_implementation"):
        yield
        return
    auto.set_attn_implementation("eager")
    try:
        yield
    finally:
        auto.set_attn_implementation(before)


def _fuse_transformer(fp32: Path, out: Path, model: Any) -> None:
    """ONNX Runtime's BERT fusions (attention, embedding + layer norm, skip layer norm,
    bias GELU) into ``out``: exact in fp32, and the fused attention is what int8 speeds up
    most. A model whose graph does not match is left as it was (still correct)."""
    from onnxruntime.transformers import optimizer

    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    fused = optimizer.optimize_model(
        str(fp32),
        model_type="bert",
        num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
        hidden_size=int(getattr(config, "hidden_size", 0) or 0),
    )
    counts = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    log.info("text graph fusions: %s", counts or "none")
    fused.save_model_to_file(str(out))


def _quantize_int8(fp32: Path, out: Path, *, keep_down: bool) -> None:
    """Dynamic int8 quantization of ``fp32``'s weight matrices into ``out``: per output
    channel, activations quantized at run time per batch (so a text's vector moves a
    little with the texts batched beside it).

    ``keep_down`` keeps the feed-forward down-projections (weights wider in than out)
    and the embedding table fp32: their inputs, GELU outputs, have the long tails that
    8-bit activations represent worst. Measured on noisy posts against torch: mean
    cosine 0.993 with them kept, 0.987 without (README "Encoder runtimes").
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not keep_down:  # the fused graph: quantize every op ONNX Runtime can
        quantize_dynamic(
            str(fp32),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # Fused contrib ops have no ONNX shape inference; their outputs are fp32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return
    prepared = out.with_name(out.stem + ".prep.onnx")
    # Symbolic shape inference cannot follow the traced pooling; ONNX's own suffices.
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    try:
        graph = onnx.load(str(prepared), load_external_data=False).graph
        shapes = {i.name: tuple(i.dims) for i in graph.initializer}
        down = [
            node.name
            for node in graph.node
            if node.op_type == "MatMul"
            and len(shapes.get(node.input[1], ())) == 2
            and shapes[node.input[1]][0] > shapes[node.input[1]][1]
        ]
        quantize_dynamic(
            str(prepared),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=down,
        )
    finally:
        prepared.unlink(missing_ok=True)
