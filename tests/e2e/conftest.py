"""Starts a real `kappa dev` process per test on free ports and a temporary data dir."""
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KAPPA_BIN = os.environ.get("KAPPA_BIN") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/kappa/target")) / "debug/kappa"
)


_ports_given = set()


def free_port():
    """A free port below the kernel's range of ephemeral ports, when there is room below it.
    A port the kernel picked (bind to port 0) can be taken again as the source port of some
    client's connection before kappa binds it, or while a test restarts kappa on it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 0
    for _ in range(1000 if ephemeral_low > 11000 else 0):
        port = random.randrange(10000, ephemeral_low)
        if port in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Kappa:
    def __init__(self, data_dir, log_path, extra_args=()):
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.kafka_port = free_port()
        self.http_port = free_port()
        self.registry_port = free_port()
        self.extra_args = list(extra_args)
        self.proc = None

    @property
    def registry_url(self):
        return f"http://127.0.0.1:{self.registry_port}"

    def wait_registry(self, timeout=30):
        """The registry answers once it has read its topic; wait for that."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.registry_url + "/subjects", timeout=5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("schema registry did not answer: " + self.log())

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.kafka_port}"

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [KAPPA_BIN, "dev", "--data-dir", str(self.data_dir),
             "--kafka-listen", self.bootstrap,
             "--http-listen", f"127.0.0.1:{self.http_port}",
             "--registry-listen", f"127.0.0.1:{self.registry_port}", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kappa exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.kafka_port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("kappa did not start listening")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        return self.proc.returncode

    def log(self):
        return self.log_path.read_text(errors="replace")

    def http(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return r.read().decode()


@pytest.fixture
def kappa(tmp_path):
    k = Kappa(tmp_path / "data", tmp_path / "kappa.log").start()
    yield k
    k.stop()


@pytest.fixture
def kappa_factory(tmp_path):
    started = []

    def make(extra_args=()):
        k = Kappa(tmp_path / "data", tmp_path / "kappa.log", extra_args)
        started.append(k)
        return k

    yield make
    for k in started:
        if k.proc and k.proc.poll() is None:
            k.kill()
