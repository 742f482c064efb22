"""The example server configurations in deploy/ load and do what their comments say: nats-server accepts
deploy/nats, and Redis, a replica and a Sentinel started from deploy/redis (on free loopback ports, in a
scratch directory) replicate, fail nothing for Switchboard's user, and refuse what that user may not do.
"""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

import render as chart

DEPLOY = chart.ROOT / "deploy"


def server(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)
    assert path, f"{name} is not installed (scripts/check-chart installs it)"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nats_config_loads():
    env = dict(os.environ, NATS_ROUTE_PASSWORD="check")
    result = subprocess.run([server("nats-server"), "-t", "-c", str(DEPLOY / "nats" / "nats-server.conf")],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_nats_config_lists_every_role():
    text = (DEPLOY / "nats" / "auth.conf").read_text()
    for inbox in ("_INBOX.router.>", "_INBOX.worker.>", "_INBOX.gateway.>", "_INBOX.operator.>"):
        assert inbox in text
    assert text.count("nkey:") == 4


class Redis:
    """redis-server processes started from deploy/redis, stopped at the end."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.procs = []

    def start(self, conf: str, *args: str) -> int:
        port = free_port()
        data = self.scratch / f"data-{port}"
        data.mkdir()
        source = DEPLOY / "redis"
        work = self.scratch / f"conf-{port}"
        shutil.copytree(source, work)  # includes are relative to the working directory
        for f in work.glob("*.conf"):  # "dir /data" is entered as the file is read: point it at the scratch directory
            f.write_text(f.read_text().replace("\ndir /data\n", f"\ndir {data}\n"))
        cmd = [server("redis-server"), str(work / conf),
               "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--daemonize", "no", "--logfile", ""] + list(args)
        self.procs.append(subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        self.wait(port, "PING", user=None, password=None, accept=("PONG", "NOAUTH"))
        return port

    def cli(self, port: int, *command: str, user="switchboard", password="change-me-switchboard-password") -> str:
        cmd = [server("redis-cli"), "-h", "127.0.0.1", "-p", str(port), "--no-auth-warning"]
        if password:
            cmd += (["--user", user] if user else []) + ["--pass", password]
        result = subprocess.run(cmd + list(command), capture_output=True, text=True, timeout=10)
        return (result.stdout + result.stderr).strip()

    def wait(self, port: int, *command: str, accept: tuple, user="switchboard", password="change-me-switchboard-password",
             seconds: float = 15) -> str:
        deadline = time.monotonic() + seconds
        out = ""
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise AssertionError(f"redis-server exited {p.returncode}:\n{p.stdout.read()}")
            out = self.cli(port, *command, user=user, password=password)
            if any(a in out for a in accept):
                return out
            time.sleep(0.1)
        raise AssertionError(f"port {port}: {' '.join(command)} answered {out!r}, not one of {accept}")

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path)
    yield r
    r.stop()


def test_redis_primary_replica_and_sentinel(redis, tmp_path):
    primary = redis.start("redis.conf")
    out = redis.cli(primary, "SET", "sb:check", "1")
    assert "NOREPLICAS" in out, f"with no replica in sync writes must be refused (min-replicas-to-write): {out}"
    replica = redis.start("replica.conf", "--replicaof", "127.0.0.1", str(primary))
    redis.wait(replica, "INFO", "replication", accept=("master_link_status:up",))
    redis.wait(primary, "SET", "sb:check", "1", accept=("OK",))

    # Switchboard's user: its keys and commands (scripts calling TIME, WAIT, ROLE, INFO), nothing else.
    assert redis.cli(primary, "EVAL", "return redis.call('TIME')[1] ~= nil and 1 or 0", "0") == "1"
    assert redis.cli(primary, "XADD", "sb:audit", "*", "k", "v") != "" and "NOPERM" not in redis.cli(primary, "XRANGE", "sb:audit", "-", "+")
    assert redis.cli(primary, "WAIT", "1", "1000") == "1"
    assert redis.cli(primary, "ROLE").startswith("master")
    assert "redis_version:" in redis.cli(primary, "INFO", "server")
    assert "NOPERM" in redis.cli(primary, "SET", "other:check", "1")
    assert "NOPERM" in redis.cli(primary, "FLUSHALL")
    assert "NOPERM" in redis.cli(primary, "CONFIG", "GET", "dir")
    assert "NOAUTH" in redis.cli(primary, "GET", "sb:check", password=None) or \
        "WRONGPASS" in redis.cli(primary, "GET", "sb:check", password=None)

    # Sentinel finds the primary and its replica through the sentinel user.
    # (The example's primary is a pod name with a quorum of 2; here one Sentinel watches the loopback primary.)
    text = (DEPLOY / "redis" / "sentinel.conf").read_text()
    assert "sentinel monitor mymaster redis-0.redis 6379 2" in text
    sentinel_dir = tmp_path / "sentinel"
    sentinel_dir.mkdir()
    (sentinel_dir / "sentinel.conf").write_text(
        text.replace("sentinel monitor mymaster redis-0.redis 6379 2", f"sentinel monitor mymaster 127.0.0.1 {primary} 1")
            .replace("\ndir /data\n", f"\ndir {sentinel_dir}\n"))
    port = free_port()
    proc = subprocess.Popen([server("redis-server"), str(sentinel_dir / "sentinel.conf"), "--sentinel", "--port", str(port),
                             "--bind", "127.0.0.1", "--dir", str(sentinel_dir), "--daemonize", "no", "--logfile", ""],
                            cwd=sentinel_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    redis.procs.append(proc)
    pw = "change-me-sentinel-client-password"
    addr = redis.wait(port, "SENTINEL", "get-master-addr-by-name", "mymaster", user=None, password=pw, accept=(str(primary),))
    assert "127.0.0.1" in addr
    redis.wait(port, "SENTINEL", "replicas", "mymaster", user=None, password=pw, accept=(str(replica),), seconds=20)
    assert "NOAUTH" in redis.cli(port, "SENTINEL", "masters", user=None, password=None)
