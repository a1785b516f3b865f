"""``crossfeed up/down/status``: unit tests of the pieces, then real engines on private
ports with a temporary state directory (never touching the shared dev engines)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from crossfeed.core.settings import Settings, StateSettings
from crossfeed.exceptions import ConfigError
from crossfeed.ops.engines import control as eng
from crossfeed.ops.engines import launch as engines_launch
from crossfeed.ops.engines import procs as engines_procs
from crossfeed.ops.engines.control import EngineStatus, display_url, down, endpoints, status, up
from crossfeed.ops.engines.procs import Endpoint, PidFiles, ProcessRecord, reachable
from crossfeed.ops.exceptions import BinaryIntegrityError, EngineStartError


def _settings(state_dir: Path, **urls: str) -> Settings:
    s = Settings()
    s.state = StateSettings(state_dir=state_dir)
    if "kafka" in urls:
        s.kafka.bootstrap = urls["kafka"]
    if "milvus" in urls:
        s.milvus.uri = urls["milvus"]
    if "redis" in urls:
        s.redis.url = SecretStr(urls["redis"])
    return s


def _port(preferred: int) -> int:
    """``preferred`` when nothing uses it, else a free port the OS picks."""
    if not engines_procs.busy_ports([preferred]):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listen_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) with a listening socket on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.add(addr)
    return found


LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


# --------------------------------------------------------------------------- unit


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "tansu"
    binary.write_bytes(b"#!/bin/sh\necho not a broker\n")
    good = engines_launch.sha256_file(binary)
    engines_launch.verify_sha256(binary, good)
    with pytest.raises(BinaryIntegrityError, match="differs from the pinned"):
        engines_launch.verify_sha256(binary, "0" * 64)
    binary.write_bytes(b"#!/bin/sh\necho tampered\n")
    with pytest.raises(BinaryIntegrityError):
        engines_launch.verify_sha256(binary, good)
    with pytest.raises(BinaryIntegrityError, match="cannot read"):
        engines_launch.verify_sha256(tmp_path / "missing", good)


def test_bundled_broker_matches_pinned_digest() -> None:
    path = engines_launch.tansu_binary()
    assert path.name == "tansu" and os.access(path, os.X_OK)


def test_wrong_pinned_digest_refuses_to_start_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import platform

    monkeypatch.setitem(engines_launch.TANSU_SHA256, platform.machine(), "f" * 64)
    port = _port(19193)
    s = _settings(tmp_path, kafka=f"127.0.0.1:{port}")
    with pytest.raises(BinaryIntegrityError, match="refusing to run"):
        up(s, ["kafka"])
    assert not reachable(Endpoint("127.0.0.1", port))
    assert not PidFiles(tmp_path).pidfile("kafka").exists()


def test_endpoints_parse_and_validate(tmp_path: Path) -> None:
    s = _settings(
        tmp_path,
        kafka="127.0.0.1:9092, localhost:9093",
        milvus="http://127.0.0.1:19530",
        redis="redis://user:s3cret@127.0.0.1:6380/2",
    )
    assert endpoints("kafka", s) == [Endpoint("127.0.0.1", 9092), Endpoint("localhost", 9093)]
    assert endpoints("milvus", s) == [Endpoint("127.0.0.1", 19530)]
    assert endpoints("redis", s) == [Endpoint("127.0.0.1", 6380)]
    assert "s3cret" not in display_url("redis", s)
    for field, bad in (
        ("kafka", "127.0.0.1"),
        ("kafka", "127.0.0.1:99999"),
        ("milvus", "./milvus.db"),
        ("redis", "unix:///tmp/redis.sock"),
        ("redis", "redis://127.0.0.1:abc/0"),
    ):
        with pytest.raises(ConfigError):
            endpoints(field, _settings(tmp_path, **{field: bad}))
    with pytest.raises(ConfigError, match="unknown engine"):
        status(s, ["postgres"])


def test_unreachable_remote_engine_is_not_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No traffic leaves the machine: reachability is stubbed to "down".
    monkeypatch.setattr(eng, "reachable", lambda ep, timeout_s=0.5: False)
    s = _settings(tmp_path, kafka="kafka.example.com:9092")
    with pytest.raises(EngineStartError, match=r"only starts engines on 127\.0\.0\.1"):
        up(s, ["kafka"])
    s = _settings(tmp_path, kafka="127.0.0.1:9092,127.0.0.1:9093")
    with pytest.raises(EngineStartError, match="single local address"):
        up(s, ["kafka"])


def test_milvus_ports_shift_as_a_block() -> None:
    assert engines_launch.milvus_ports(19530) == engines_launch.MILVUS_DEFAULT_PORTS
    shifted = engines_launch.milvus_ports(29530)
    assert shifted["proxy_port"] == 29530
    assert shifted["etcd_port"] == 12379
    assert shifted["metrics_port"] == 19091
    assert len(set(shifted.values())) == len(shifted)
    for bad in (9530, 40000):
        with pytest.raises(ConfigError, match="shifts all its ports"):
            engines_launch.milvus_ports(bad)


def test_milvus_config_pins_what_it_can(tmp_path: Path) -> None:
    template = (engines_launch._milvus_package_dir() / "config.yaml.template").read_text()
    ports = engines_launch.milvus_ports(29530)
    cfg = yaml.safe_load(engines_launch.render_milvus_config(template, ports, tmp_path))
    assert cfg["proxy"]["port"] == 29530
    assert cfg["etcd"]["endpoints"] == "127.0.0.1:12379"
    assert cfg["etcd"]["config"]["path"] == str(tmp_path / "configs" / "etcd.yaml")
    assert cfg["etcd"]["use"]["embed"] is True
    assert cfg["localStorage"]["path"] == str(tmp_path / "data")
    for component in ("rootCoord", "proxy", "queryCoord", "queryNode", "dataCoord", "dataNode"):
        assert cfg[component]["ip"] == "127.0.0.1"
    # fresh rows searched exactly (the interim index lost filtered matches)
    assert cfg["queryNode"]["segcore"]["interimIndex"]["enableIndex"] is False
    etcd = yaml.safe_load(engines_launch.etcd_config(ports))
    assert etcd["listen-client-urls"] == "http://127.0.0.1:12379"
    assert etcd["listen-peer-urls"] == "http://127.0.0.1:12380"
    with pytest.raises(ConfigError, match="unexpected Milvus config template"):
        engines_launch.render_milvus_config("proxy:\n  port: 1\n", ports, tmp_path)


def test_redis_conf_is_private_and_loopback(tmp_path: Path) -> None:
    conf = engines_launch.redis_conf(16389, tmp_path, None, "pw")
    assert "bind 127.0.0.1\n" in conf and 'save ""\n' in conf and "appendonly no\n" in conf
    assert 'requirepass "pw"' in conf
    acl = engines_launch.redis_conf(16389, tmp_path, "app", "pw")
    assert 'user app on ">pw"' in acl and "user default off" in acl
    with pytest.raises(ConfigError):
        engines_launch.redis_conf(16389, tmp_path, None, 'bad"pw')


def test_stale_and_foreign_pidfiles_are_not_ours(tmp_path: Path) -> None:
    files = PidFiles(tmp_path)
    files.ensure()
    dead = subprocess.Popen(["true"])
    dead.wait()
    files.write(ProcessRecord("redis", dead.pid, "/usr/bin/true", None, 16389))
    # A live pid whose executable is not the recorded one: a reused pid, not our engine.
    files.write(ProcessRecord("kafka", os.getpid(), "/nonexistent/tansu", None, 19192))
    s = _settings(tmp_path, kafka="127.0.0.1:1", redis="redis://127.0.0.1:1/0")
    for st in status(s, ["kafka", "redis"]):
        assert not st.started_by_us and st.pid is None
    assert not files.pidfile("redis").exists() and not files.pidfile("kafka").exists()
    assert [st.action for st in down(s, ["kafka", "redis"])] == ["absent", "absent"]


def test_status_line_is_readable() -> None:
    st = EngineStatus("kafka", "127.0.0.1:9092", True, True, 42, "started", 0.25)
    assert " ".join(st.line().split()) == (
        "kafka 127.0.0.1:9092 reachable started by us (pid 42), ready in 0.25 s"
    )


# --------------------------------------------------------------------------- integration


@pytest.mark.integration
def test_up_status_down_on_private_ports(tmp_path: Path, unique_name) -> None:  # type: ignore[no-untyped-def]
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from redis import Redis

    kport, rport = _port(19192), _port(16389)
    s = _settings(tmp_path, kafka=f"127.0.0.1:{kport}", redis=f"redis://127.0.0.1:{rport}/0")
    names = ["kafka", "redis"]

    before = status(s, names)
    assert [(st.reachable, st.started_by_us) for st in before] == [(False, False)] * 2

    started = up(s, names)
    assert [st.action for st in started] == ["started", "started"]
    for st in started:
        assert st.reachable and st.started_by_us and st.pid and st.start_s is not None
        assert st.log_path is not None and st.log_path.is_file()
    assert _listen_addresses(kport) == {LOOPBACK_HEX}
    assert _listen_addresses(rport) == {LOOPBACK_HEX}

    # Really usable: a topic round trip through the broker, a key through Redis.
    topic = unique_name("infra")
    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{kport}", request_timeout_ms=5000)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()
    with Redis(port=rport) as r:
        assert r.set(f"{topic}:k", "v") and r.get(f"{topic}:k") == b"v"

    pids = {st.name: st.pid for st in started}
    now = status(s, names)
    assert all(st.reachable and st.started_by_us for st in now)
    assert {st.name: st.pid for st in now} == pids

    again = up(s, names)  # idempotent: nothing new starts
    assert [st.action for st in again] == ["running", "running"]
    assert {st.name: st.pid for st in again} == pids

    stopped = down(s, names)
    assert [st.action for st in stopped] == ["stopped", "stopped"]
    assert not reachable(Endpoint("127.0.0.1", kport))
    assert not reachable(Endpoint("127.0.0.1", rport))
    for name, pid in pids.items():
        assert not engines_procs.pid_alive(pid)
        assert not PidFiles(tmp_path).pidfile(name).exists()
    assert [st.action for st in down(s, names)] == ["absent", "absent"]


@pytest.mark.integration
def test_engine_started_by_someone_else_is_left_alone(tmp_path: Path) -> None:
    port = _port(16390)
    foreign = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        s = _settings(tmp_path, redis=f"redis://127.0.0.1:{port}/0")
        eng.wait_ready("redis", s, timeout_s=10)
        [st] = up(s, ["redis"])
        assert (st.action, st.started_by_us, st.pid) == ("running", False, None)
        [st] = down(s, ["redis"])
        assert st.action == "not-ours" and st.reachable
        assert foreign.poll() is None
        assert eng.probe("redis", s) is None
    finally:
        foreign.terminate()
        foreign.wait(10)


@pytest.mark.integration
def test_interrupted_up_stops_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: list[ProcessRecord] = []
    real_spawn = eng.spawn

    def recording_spawn(*args, **kwargs):  # type: ignore[no-untyped-def]
        spawned.append(real_spawn(*args, **kwargs))
        return spawned[-1]

    def interrupted(name: str, settings: Settings) -> str | None:
        raise KeyboardInterrupt

    monkeypatch.setattr(eng, "spawn", recording_spawn)
    monkeypatch.setattr(eng, "probe", interrupted)
    port = _port(16391)
    s = _settings(tmp_path, redis=f"redis://127.0.0.1:{port}/0")
    with pytest.raises(KeyboardInterrupt):
        up(s, ["redis"])
    assert len(spawned) == 1
    assert not engines_procs.pid_alive(spawned[0].pid)
    assert not PidFiles(tmp_path).pidfile("redis").exists()
    assert not reachable(Endpoint("127.0.0.1", port))


@pytest.mark.integration
def test_engine_that_dies_at_start_reports_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engines_launch, "redis_conf", lambda *a: "no-such-directive yes\n")
    s = _settings(tmp_path, redis=f"redis://127.0.0.1:{_port(16392)}/0")
    started = time.monotonic()
    with pytest.raises(EngineStartError, match=r"(?s)exited during startup.*no-such-directive"):
        up(s, ["redis"])
    assert time.monotonic() - started < 10  # failed fast, not after the timeout
    assert not PidFiles(tmp_path).pidfile("redis").exists()


@pytest.mark.integration
def test_running_milvus_is_detected_not_restarted(engines: list, tmp_path: Path) -> None:
    s = _settings(tmp_path)  # the configured MILVUS_URI, a fresh state dir
    [st] = up(s, ["milvus"])
    assert st.action == "running" and st.reachable
    assert not st.started_by_us and st.pid is None
    assert not PidFiles(tmp_path).pidfile("milvus").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_second_milvus_on_shifted_ports(tmp_path: Path, unique_name) -> None:  # type: ignore[no-untyped-def]
    from pymilvus import DataType, MilvusClient

    grpc = next(
        p
        for p in range(29530, 31900, 100)
        if not engines_procs.busy_ports(
            engines_launch.milvus_listen_ports(engines_launch.milvus_ports(p))
        )
    )
    ports = engines_launch.milvus_ports(grpc)
    s = _settings(tmp_path, milvus=f"http://127.0.0.1:{grpc}")
    try:
        [st] = up(s, ["milvus"])
        assert st.action == "started" and st.started_by_us and st.start_s is not None
        assert _listen_addresses(ports["etcd_port"]) == {LOOPBACK_HEX}
        assert _listen_addresses(ports["etcd_peer_port"]) == {LOOPBACK_HEX}
        assert _listen_addresses(ports["metrics_port"])  # shifted, though not pinnable
        client = MilvusClient(uri=s.milvus.uri, timeout=30)
        try:
            name = unique_name("infra")
            schema = client.create_schema(auto_id=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("v", DataType.FLOAT_VECTOR, dim=4)
            client.create_collection(name, schema=schema)
            assert name in client.list_collections()
        finally:
            client.close()
        [again] = up(s, ["milvus"])
        assert again.action == "running" and again.pid == st.pid
    finally:
        [st] = down(s, ["milvus"])
        shutil.rmtree(tmp_path / "engines" / "milvus" / "bin", ignore_errors=True)
    assert st.action == "stopped"
    assert not engines_procs.busy_ports(engines_launch.milvus_listen_ports(ports))


@pytest.mark.integration
def test_up_refuses_to_orphan_an_engine_started_on_another_port(tmp_path: Path) -> None:
    first, second = _port(16393), _port(16394)
    s = _settings(tmp_path, redis=f"redis://127.0.0.1:{first}/0")
    [st] = up(s, ["redis"])
    try:
        moved = _settings(tmp_path, redis=f"redis://127.0.0.1:{second}/0")
        with pytest.raises(EngineStartError, match="crossfeed down redis"):
            up(moved, ["redis"])
        assert not reachable(Endpoint("127.0.0.1", second))
        [other] = status(moved, ["redis"])
        assert not other.started_by_us
        [gone] = down(moved, ["redis"])  # still ours: down stops it
        assert gone.action == "stopped" and gone.pid == st.pid
    finally:
        down(s, ["redis"])
    assert not reachable(Endpoint("127.0.0.1", first))
