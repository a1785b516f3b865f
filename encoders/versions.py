"""Head versions on disk: save, list and load them (with a tag space's vocabulary).

A version is a directory ``<models_dir>/<version>/`` holding ``heads.safetensors``
(the weights of one small head per modality), ``config.json`` (version id,
creation time, head kinds and dims, training-data hash, metrics, notes, and the
weights' SHA-256) and, for a tag space, ``tags.json`` (its vocabulary). Versions
are immutable: saving never overwrites, and a new fit is a new version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from crossfeed.encoders.exceptions import HeadVersionError
from crossfeed.encoders.heads import (
    CONFIG_FILE,
    FALLBACK_SEED,
    FALLBACK_VERSION,
    FORMAT,
    WEIGHTS_FILE,
    HeadSet,
    HeadSpec,
    ProjectionHead,
    validate_version,
)
from crossfeed.encoders.vocab import TAGS_FILE, TagVocab

log = logging.getLogger(__name__)


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
    vocab = None
    if any(h.spec.kind == "tag_posterior" for h in heads.values()):
        vocab = load_vocab_for_version(path.parent, config["version"])
    result = HeadSet(config["version"], _parse_time(config), heads, config, tag_vocab=vocab)
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


def save_vocab_for_version(models_dir: Path, version: str, vocab: TagVocab) -> Path:
    """Store ``vocab`` as ``tags.json`` inside an existing head version's directory."""
    directory = Path(models_dir) / validate_version(version)
    if not directory.is_dir():
        raise HeadVersionError(f"head version {version!r} not found in {models_dir}")
    return vocab.save(directory / TAGS_FILE)


def load_vocab_for_version(models_dir: Path, version: str) -> TagVocab | None:
    """The vocabulary saved with a head version, or None when it has none."""
    path = Path(models_dir) / validate_version(version) / TAGS_FILE
    if not path.is_file():
        return None
    return TagVocab.load(path)
