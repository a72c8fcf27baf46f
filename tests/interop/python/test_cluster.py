"""py-consul against registry nodes on one 3-member etcd cluster (Debian's etcd-server,
started here on free loopback ports with scratch data directories, killed at the end): a
registration through one node is seen through the other, a blocking query held on one wakes
on a change made through the other, each node lists both in its catalog of nodes, and
`kill -9` of an etcd member changes nothing for the clients."""

import subprocess
import tempfile
import threading

import consul
import pytest

from conftest import Registry, accepts, eventually, free_port


class EtcdCluster:
    """Three etcd members on loopback, each with a scratch data directory."""

    def __init__(self, root):
        names = ["m1", "m2", "m3"]
        self.clients = {n: free_port() for n in names}
        peers = {n: free_port() for n in names}
        initial = ",".join(f"{n}=http://127.0.0.1:{peers[n]}" for n in names)
        self.procs = {}
        for n in names:
            self.procs[n] = subprocess.Popen(
                ["etcd", "--name", n, "--data-dir", f"{root}/{n}",
                 "--listen-client-urls", f"http://127.0.0.1:{self.clients[n]}",
                 "--advertise-client-urls", f"http://127.0.0.1:{self.clients[n]}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peers[n]}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peers[n]}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        for n in names:
            eventually(f"etcd member {n} accepts connections", lambda n=n: accepts(self.clients[n]))

    def url(self):
        return "etcd://" + ",".join(f"127.0.0.1:{p}" for p in self.clients.values())

    def kill_9(self, name):
        self.procs[name].kill()
        self.procs[name].wait()

    def stop(self):
        for proc in self.procs.values():
            proc.kill()
            proc.wait()


@pytest.fixture
def etcd():
    with tempfile.TemporaryDirectory() as root:
        cluster = EtcdCluster(root)
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
def two_nodes(etcd):
    with tempfile.TemporaryDirectory() as a_dir, tempfile.TemporaryDirectory() as b_dir:
        nodes = []
        try:
            for name, data in (("a", a_dir), ("b", b_dir)):
                nodes.append(Registry(data, ["--store", etcd.url(), "--node", name]))
            yield etcd, nodes
        finally:
            for node in nodes:
                node.stop()


def test_py_consul_sees_one_catalog_through_every_node(two_nodes):
    etcd, nodes = two_nodes
    a, b = (consul.Consul(host=n.host, port=n.port) for n in nodes)
    assert a.agent.service.register("web", service_id="web-1", port=9001,
                                    check=consul.Check.ttl("30s"))
    assert a.agent.check.ttl_pass("service:web-1")
    eventually("b sees the instance registered through a",
               lambda: [e["Service"]["ID"] for e in b.health.service("web", passing=True)[1]] == ["web-1"])
    _, entries = b.health.service("web")
    assert entries[0]["Node"]["Node"] == "a", "the instance belongs to the node it came through"
    assert sorted(n["Node"] for n in b.catalog.nodes()[1]) == ["a", "b"]

    # A blocking query held on b wakes on a change made through a.
    index, _ = b.health.service("web")
    woken = {}

    def hold():
        woken["answer"] = b.health.service("web", index=index, wait="30s")

    holder = threading.Thread(target=hold)
    holder.start()
    assert a.agent.service.register("web", service_id="web-2", port=9002)
    holder.join(timeout=30)
    assert not holder.is_alive(), "the query held on b did not wake"
    new_index, entries = woken["answer"]
    assert int(new_index) > int(index)
    assert sorted(e["Service"]["ID"] for e in entries) == ["web-1", "web-2"]

    # kill -9 of an etcd member: both nodes carry on (each call goes to a live member).
    etcd.kill_9("m1")
    assert a.agent.service.register("web", service_id="web-3", port=9003)
    eventually("b sees web-3 with a member dead",
               lambda: sorted(e["Service"]["ID"] for e in b.health.service("web")[1])
               == ["web-1", "web-2", "web-3"])
    assert b.agent.service.register("db", service_id="db-1", port=5432)
    eventually("a sees db-1", lambda: len(a.health.service("db")[1]) == 1)
