"""Idempotent producers: librdkafka with enable.idempotence writes through a proxy that keeps
cutting its TCP connections mid-stream; the topic ends with no duplicate and no gap."""
import random
import socket
import threading
import time

from confluent_kafka import Producer

from conftest import Kappa, free_port
from test_confluent_kafka import create_topic, read_all


class CuttingProxy:
    """Forwards TCP to the broker; cut() closes every connection at once, mid-request or
    mid-response, whatever is in flight."""

    def __init__(self, port, target_port):
        self.server = socket.create_server(("127.0.0.1", port))
        self.target_port = target_port
        self.lock = threading.Lock()
        self.conns = []
        self.cuts = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()  # the broker is stopping
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(src, dst):
        try:
            while True:
                data = src.recv(random.choice([7, 100, 65536]))
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.cuts += 1

    def close(self):
        self.server.close()
        self.cut()


def test_idempotent_producer_through_connection_cuts_has_no_duplicates_or_gaps(tmp_path):
    proxy_port = free_port()
    k = Kappa(tmp_path / "data", tmp_path / "kappa.log", ["--kafka-advertised", f"127.0.0.1:{proxy_port}"])
    k.start()
    proxy = CuttingProxy(proxy_port, k.kafka_port)
    try:
        bootstrap = f"127.0.0.1:{proxy_port}"
        create_topic(type("K", (), {"bootstrap": bootstrap})(), "idem", 3)
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 2,
                      "batch.num.messages": 200, "message.timeout.ms": 120000,
                      "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 100})
        errors = []
        n = 30_000
        stop = threading.Event()

        def cutter():
            while not stop.is_set():
                time.sleep(random.uniform(0.2, 0.6))
                proxy.cut()

        t = threading.Thread(target=cutter)
        t.start()
        for i in range(n):
            while True:
                try:
                    p.produce("idem", value=str(i).encode(), partition=i % 3,
                              on_delivery=lambda e, m: errors.append(e) if e else None)
                    break
                except BufferError:
                    p.poll(0.05)
            if i % 250 == 0:
                p.poll(0)
                time.sleep(0.05)
        stop.set()
        t.join()
        assert p.flush(120) == 0
        assert errors == []
        assert proxy.cuts >= 8
        got = read_all(type("K", (), {"bootstrap": bootstrap})(), "idem", 3, expected=n)
        by_partition = {0: [], 1: [], 2: []}
        for m in got:
            by_partition[m.partition()].append(int(m.value()))
        for part, values in by_partition.items():
            assert values == list(range(part, n, 3)), f"partition {part}: duplicates or gaps"
    finally:
        proxy.close()
        k.stop()


def test_idempotent_producer_state_survives_broker_restart(kappa_factory):
    k = kappa_factory().start()
    create_topic(k, "idem-restart", 1)
    p = Producer({"bootstrap.servers": k.bootstrap, "enable.idempotence": True, "linger.ms": 1,
                  "message.timeout.ms": 60000, "reconnect.backoff.ms": 50})
    for i in range(1000):
        p.produce("idem-restart", value=str(i).encode(), partition=0)
    assert p.flush(30) == 0
    k.kill()
    k.start()
    # The same producer (same id, epoch, next sequence) carries on after the restart.
    for i in range(1000, 2000):
        p.produce("idem-restart", value=str(i).encode(), partition=0)
    assert p.flush(60) == 0
    values = [int(m.value()) for m in read_all(k, "idem-restart", 1, expected=2000)]
    assert values == list(range(2000))
    k.stop()
