"""Projection heads into the shared space, stored and loaded by version.

A version is a directory ``<models_dir>/<version>/`` holding ``heads.safetensors``
(the weights of one small head per modality) and ``config.json`` (version id,
creation time, head kinds and dims, training-data hash, metrics, notes, and the
weights' SHA-256). Videos use the image head on mean-pooled frame features.

Every vector in the index records the version that produced it, so versions
are immutable: saving never overwrites, and a new fit is a new version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from crossfeed.encoders.base import l2_normalize
from crossfeed.encoders.exceptions import HeadVersionError

log = logging.getLogger(__name__)

HeadKind = Literal["identity", "linear", "mlp", "tag_posterior"]
HEAD_KINDS: tuple[str, ...] = ("identity", "linear", "mlp", "tag_posterior")
MODALITY_HEADS: dict[str, str] = {"text": "text", "image": "image", "video": "image"}
FALLBACK_VERSION = "untrained-v0"
FALLBACK_SEED = 20_240_601
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "heads.safetensors"
FORMAT = 1
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def validate_version(version: str) -> str:
    """A version id is also a directory name: refuse anything path-like."""
    if not isinstance(version, str) or not _VERSION_RE.match(version) or ".." in version:
        raise HeadVersionError(
            f"invalid head version {version!r}: "
            "use 1-100 of [A-Za-z0-9._-], not starting with . or -"
        )
    return version


@dataclass(frozen=True)
class HeadSpec:
    """Shape of one head: ``identity`` (in = out), ``linear``, ``mlp`` (one hidden layer), or
    ``tag_posterior`` (linear, or one hidden layer when ``hidden`` is set, then a sigmoid:
    ``out_dim`` tag probabilities, see :class:`TagPosteriorNet`)."""

    kind: str
    in_dim: int
    out_dim: int
    hidden: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise HeadVersionError(f"unknown head kind {self.kind!r}; expected one of {HEAD_KINDS}")
        if self.in_dim < 1 or self.out_dim < 1:
            raise HeadVersionError(f"head dims must be positive, got {self.in_dim}->{self.out_dim}")
        if self.kind == "identity" and self.in_dim != self.out_dim:
            raise HeadVersionError("an identity head needs in_dim == out_dim")
        if self.kind == "mlp" and (self.hidden is None or self.hidden < 1):
            raise HeadVersionError("an mlp head needs a positive hidden size")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "in_dim": self.in_dim, "out_dim": self.out_dim}
        if self.hidden is not None:
            out["hidden"] = self.hidden
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HeadSpec:
        try:
            hidden = data.get("hidden")
            return cls(
                kind=str(data["kind"]),
                in_dim=int(data["in_dim"]),
                out_dim=int(data["out_dim"]),
                hidden=None if hidden is None else int(hidden),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise HeadVersionError(f"malformed head spec {dict(data)!r}: {exc}") from exc


class TagPosteriorNet(nn.Module):
    """Tag logits -> probabilities, centred, each block unit-normalised and weighted.

    The output dims are tags (and optionally tag topics), in blocks: ``block[j]``
    says which block dim ``j`` belongs to and ``weight[j]`` that block's weight,
    so the cosine of two outputs is the weighted sum of per-block cosines.
    Subtracting ``center`` (the mean training posterior) first removes what
    every item shares (the frequent tags), which would otherwise make a few
    items hubs near every query. All three are buffers saved with the weights;
    the defaults (one block, weight 1, centre 0) give plain posteriors.
    :meth:`posterior` returns the probabilities themselves.
    """

    center: torch.Tensor
    block: torch.Tensor
    weight: torch.Tensor

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.logits: nn.Module
        if spec.hidden is None:
            self.logits = nn.Linear(spec.in_dim, spec.out_dim)
        else:
            self.logits = nn.Sequential(
                nn.Linear(spec.in_dim, spec.hidden), nn.GELU(), nn.Linear(spec.hidden, spec.out_dim)
            )
        self.register_buffer("center", torch.zeros(spec.out_dim))
        self.register_buffer("block", torch.zeros(spec.out_dim, dtype=torch.long))
        self.register_buffer("weight", torch.ones(spec.out_dim))

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_logits(self.logits(x))

    def from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        z = torch.sigmoid(logits) - self.center  # (n, out)
        squares = torch.zeros_like(z).index_add_(1, self.block, z * z)  # (n, out): per block
        norms = squares.sqrt().clamp_min(1e-12).index_select(1, self.block)
        return z / norms * self.weight.sqrt()


class ProjectionHead(nn.Module):
    """Maps one tower's features into the shared space (normalisation happens after)."""

    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.net: nn.Module
        if spec.kind == "identity":
            self.net = nn.Identity()
        elif spec.kind == "linear":
            self.net = nn.Linear(spec.in_dim, spec.out_dim)
        elif spec.kind == "tag_posterior":
            self.net = TagPosteriorNet(spec)
        else:
            assert spec.hidden is not None
            self.net = nn.Sequential(
                nn.Linear(spec.in_dim, spec.hidden),
                nn.GELU(),
                nn.Linear(spec.hidden, spec.out_dim),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @classmethod
    def linear_from_numpy(
        cls, weight: np.ndarray, bias: np.ndarray | None = None
    ) -> ProjectionHead:
        """A linear head computing ``x @ weight + bias`` (weight: (in_dim, out_dim))."""
        in_dim, out_dim = weight.shape
        head = cls(HeadSpec("linear", int(in_dim), int(out_dim)))
        linear = head.net
        assert isinstance(linear, nn.Linear)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight.T, dtype=np.float32)))
            if bias is None:
                linear.bias.zero_()
            else:
                linear.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))
        return head


@dataclass
class HeadSet:
    """One loaded version: a head per modality plus its config."""

    version: str
    created_at: datetime
    heads: dict[str, ProjectionHead]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.heads["text"].spec.out_dim

    @property
    def is_fallback(self) -> bool:
        return self.version == FALLBACK_VERSION

    def head_for(self, modality: str) -> ProjectionHead:
        try:
            return self.heads[MODALITY_HEADS[modality]]
        except KeyError as exc:
            raise HeadVersionError(f"version {self.version} has no head for {modality!r}") from exc

    def to(self, device: str) -> HeadSet:
        for head in self.heads.values():
            head.to(device).eval()
        return self

    def project(self, modality: str, features: np.ndarray, device: str = "cpu") -> np.ndarray:
        """(n, in_dim) tower features -> (n, dim) L2-normalised float32 shared-space vectors."""
        head = self.head_for(modality)
        feats = np.asarray(features, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != head.spec.in_dim:
            raise HeadVersionError(
                f"version {self.version}: {modality} head expects {head.spec.in_dim}-d features, "
                f"got shape {feats.shape} (head fitted on another tower?)"
            )
        if feats.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            out = head(torch.from_numpy(feats).to(device)).float().cpu().numpy()
        return l2_normalize(out)


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created_at: datetime
    path: Path
    config: dict[str, Any]


def new_version_id(prefix: str = "heads") -> str:
    """``<prefix>-YYYYmmddTHHMMSSZ-<random>``: sortable, unique, a safe directory name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return validate_version(f"{prefix}-{stamp}-{secrets.token_hex(3)}")


def save_heads(
    models_dir: Path,
    heads: Mapping[str, ProjectionHead],
    *,
    version: str | None = None,
    data_hash: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    notes: str = "",
    towers: Mapping[str, str] | None = None,
    created_at: datetime | None = None,
) -> str:
    """Write a new, immutable version and return its id.

    ``heads`` needs at least "text" and "image" with the same output dim.
    ``towers`` records which models produced the features the heads were fitted
    on, so a mismatch can be warned about at load. The directory is written
    under a temporary name and renamed, so readers never see half a version.
    """
    if "text" not in heads or "image" not in heads:
        raise HeadVersionError("a version needs a 'text' and an 'image' head")
    dims = {name: head.spec.out_dim for name, head in heads.items()}
    if len(set(dims.values())) != 1:
        raise HeadVersionError(f"all heads must project to the same dim, got {dims}")
    version = new_version_id() if version is None else validate_version(version)
    created = (created_at or datetime.now(UTC)).astimezone(UTC)
    models_dir = Path(models_dir)
    final = models_dir / version
    if final.exists():
        raise HeadVersionError(f"head version {version} already exists in {models_dir}")
    models_dir.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import save_file

    tensors = {
        f"{name}.{key}": value.detach().cpu().contiguous()
        for name, head in heads.items()
        for key, value in head.state_dict().items()
    }
    tmp = models_dir / f".tmp-{version}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        weights = tmp / WEIGHTS_FILE
        save_file(tensors, str(weights), metadata={"version": version})
        config = {
            "format": FORMAT,
            "version": version,
            "created_at": created.isoformat(),
            "dim": next(iter(dims.values())),
            "heads": {name: head.spec.to_json() for name, head in heads.items()},
            "towers": dict(towers or {}),
            "data_hash": data_hash,
            "metrics": _jsonable(dict(metrics or {})),
            "notes": notes,
            "weights_sha256": _sha256(weights),
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved head version %s to %s", version, final)
    return version


def list_versions(models_dir: Path) -> list[VersionInfo]:
    """Valid versions under ``models_dir``, newest ``created_at`` first.

    Directories without a readable config are skipped with a warning (a
    half-copied version must not break startup).
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    found: list[VersionInfo] = []
    for entry in models_dir.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            config = _read_config(entry)
        except HeadVersionError as exc:
            log.warning("skipping head directory %s: %s", entry, exc)
            continue
        found.append(VersionInfo(config["version"], _parse_time(config), entry, config))
    found.sort(key=lambda v: (v.created_at, v.version), reverse=True)
    return found


def load_heads(
    models_dir: Path,
    version: str = "latest",
    *,
    device: str = "cpu",
    text_dim: int = 384,
    image_dim: int = 1280,
) -> HeadSet:
    """Load ``version`` ("latest" = newest by created_at) from ``models_dir``.

    With no version on disk (or ``version == "untrained-v0"``) this returns the
    built-in fallback and logs a WARNING: its image head is a random projection.
    ``text_dim``/``image_dim`` size that fallback to the loaded towers.
    """
    if version == FALLBACK_VERSION:
        return fallback_heads(text_dim, image_dim).to(device)
    if version == "latest":
        versions = list_versions(models_dir)
        if not versions:
            return fallback_heads(text_dim, image_dim).to(device)
        path = versions[0].path
    else:
        path = Path(models_dir) / validate_version(version)
        if not path.is_dir():
            raise HeadVersionError(f"head version {version!r} not found in {models_dir}")
    config = _read_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise HeadVersionError(f"head version {config['version']} has no {WEIGHTS_FILE}")
    expected = config.get("weights_sha256")
    if expected and _sha256(weights) != expected:
        raise HeadVersionError(f"head version {config['version']}: weights fail their checksum")

    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights), device="cpu")
    except Exception as exc:  # a corrupt file is a config problem
        raise HeadVersionError(f"cannot read {weights}: {exc}") from exc
    heads: dict[str, ProjectionHead] = {}
    for name, spec_json in config["heads"].items():
        head = ProjectionHead(HeadSpec.from_json(spec_json))
        prefix = f"{name}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            head.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise HeadVersionError(f"head {name} of {config['version']}: {exc}") from exc
        heads[name] = head
    for required in ("text", "image"):
        if required not in heads:
            raise HeadVersionError(f"head version {config['version']} lacks a {required} head")
    result = HeadSet(config["version"], _parse_time(config), heads, config)
    log.info("loaded head version %s (dim %d) from %s", result.version, result.dim, path)
    return result.to(device)


def fallback_heads(text_dim: int = 384, image_dim: int = 1280) -> HeadSet:
    """The built-in "untrained-v0": text identity, image a fixed seeded random projection.

    The random projection keeps the pipeline runnable end to end before any
    head is fitted, but image-to-text similarity is meaningless with it.
    """
    log.warning(
        "no fitted projection head found: using built-in %s (text = identity, image = seeded "
        "random projection); image/video search quality is meaningless until a head is fitted",
        FALLBACK_VERSION,
    )
    rng = np.random.default_rng(FALLBACK_SEED)
    weight = rng.standard_normal((image_dim, text_dim)) / np.sqrt(image_dim)
    heads = {
        "text": ProjectionHead(HeadSpec("identity", text_dim, text_dim)),
        "image": ProjectionHead.linear_from_numpy(weight, np.zeros(text_dim)),
    }
    config = {
        "format": FORMAT,
        "version": FALLBACK_VERSION,
        "created_at": datetime(1970, 1, 1, tzinfo=UTC).isoformat(),
        "dim": text_dim,
        "heads": {name: head.spec.to_json() for name, head in heads.items()},
        "notes": "built-in fallback; image head is a seeded random projection",
    }
    return HeadSet(FALLBACK_VERSION, datetime(1970, 1, 1, tzinfo=UTC), heads, config)


def _read_config(path: Path) -> dict[str, Any]:
    cfg_path = path / CONFIG_FILE
    try:
        config = json.loads(cfg_path.read_text())
    except FileNotFoundError as exc:
        raise HeadVersionError(f"{cfg_path} is missing") from exc
    except (OSError, ValueError) as exc:
        raise HeadVersionError(f"{cfg_path} is unreadable: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("heads"), dict):
        raise HeadVersionError(f"{cfg_path} has no 'heads' mapping")
    if config.get("version") != path.name:
        raise HeadVersionError(f"{cfg_path} names version {config.get('version')!r}")
    _parse_time(config)
    return config


def _parse_time(config: Mapping[str, Any]) -> datetime:
    try:
        value = datetime.fromisoformat(str(config["created_at"]))
    except (KeyError, ValueError) as exc:
        raise HeadVersionError(f"version {config.get('version')!r}: bad created_at") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    """Metrics often hold numpy scalars/arrays; make them plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
