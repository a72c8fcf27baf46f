"""py-consul (PyPI) on Consul's catalog writes, `agent.members` and user events, used as its
README shows, on both store backends: an external service registered with `catalog.register`
is found by `health.service(passing=True)` and by DNS-free discovery as any other, its check
is what the registrar last said, `catalog.deregister` takes a service or the whole node away;
`agent.members` lists the registry node alive; `event.fire` reaches `event.list`, and a
blocking `event.list(index=...)` returns with the next event."""

import base64
import threading

import consul
import pytest


def client(registry):
    return consul.Consul(host=registry.host, port=registry.port)


def passing_ids(c, name):
    _, entries = c.health.service(name, passing=True)
    return sorted(e["Service"]["ID"] for e in entries)


def test_external_services_round_trip(store_registry):
    c = client(store_registry)
    service = {"ID": "pg-1", "Service": "postgres", "Port": 5432, "Tags": ["primary"]}
    check = {"CheckID": "pg-1-up", "Name": "postgres up", "Status": "passing", "ServiceID": "pg-1"}
    assert c.catalog.register("db-host", "10.1.2.3", service=service, check=check) is True
    assert c.catalog.register(
        "db-host", "10.1.2.3",
        service={"ID": "pg-2", "Service": "postgres", "Port": 5433},
        check={"CheckID": "pg-2-up", "Name": "postgres up", "Status": "passing", "ServiceID": "pg-2"},
    ) is True

    assert passing_ids(c, "postgres") == ["pg-1", "pg-2"]
    _, nodes = c.catalog.nodes()
    external = [n for n in nodes if n["Node"] == "db-host"]
    assert external and external[0]["Address"] == "10.1.2.3"
    _, entries = c.catalog.service("postgres", tag="primary")
    assert [(e["ServiceID"], e["Node"], e["Address"]) for e in entries] == [("pg-1", "db-host", "10.1.2.3")]
    _, node = c.catalog.node("db-host")
    assert sorted(node["Services"]) == ["pg-1", "pg-2"]

    # The registrar marks pg-2 down: it leaves ?passing, and nothing probes it back.
    down = {"CheckID": "pg-2-up", "Name": "postgres up", "Status": "critical", "ServiceID": "pg-2"}
    assert c.catalog.register("db-host", "10.1.2.3", check=down, skip_node_update=True) is True
    assert passing_ids(c, "postgres") == ["pg-1"]
    _, checks = c.health.node("db-host")
    assert {ch["CheckID"]: ch["Status"] for ch in checks} == {"pg-1-up": "passing", "pg-2-up": "critical"}

    # A registry node's name is not the catalog's to write.
    members = c.agent.members()
    own = members[0]["Name"]
    with pytest.raises(consul.ConsulException, match="is a registry node"):
        c.catalog.register(own, "127.0.0.1", service={"Service": "x"})

    assert c.catalog.deregister("db-host", service_id="pg-2") is True
    _, entries = c.health.service("postgres")
    assert [e["Service"]["ID"] for e in entries] == ["pg-1"]
    assert c.catalog.deregister("db-host") is True
    _, entries = c.health.service("postgres")
    assert entries == []
    _, nodes = c.catalog.nodes()
    assert all(n["Node"] != "db-host" for n in nodes)


def test_members_list_the_registry_node_alive(store_registry):
    c = client(store_registry)
    members = c.agent.members()
    assert len(members) == 1
    assert members[0]["Status"] == 1
    assert members[0]["Tags"]["dc"] == "dc1"
    _, nodes = c.catalog.nodes()
    assert members[0]["Name"] in [n["Node"] for n in nodes]
    wan = c.agent.members(wan=True)
    assert wan[0]["Name"] == f"{members[0]['Name']}.dc1"


def test_events_fire_list_and_wake_a_blocking_list(store_registry):
    c = client(store_registry)
    fired = c.event.fire("deploy", "v2")
    assert fired["Name"] == "deploy" and fired["LTime"] == 1
    index, events = c.event.list(name="deploy")
    assert [e["Name"] for e in events] == ["deploy"]

    woken = {}

    def watch():
        woken["answer"] = c.event.list(index=index, wait="10s")

    watcher = threading.Thread(target=watch)
    watcher.start()
    own = c.agent.members()[0]["Name"]
    c.event.fire("restart", "", node=f"^{own}$")
    watcher.join(timeout=15)
    assert not watcher.is_alive()
    new_index, events = woken["answer"]
    assert new_index != index
    assert [e["Name"] for e in events] == ["deploy", "restart"]

    # One aimed at another node is not this node's to list.
    c.event.fire("elsewhere", "", node="^some-other-node$")
    assert [e["Name"] for e in c.event.list()[1]] == ["deploy", "restart"]
    with pytest.raises(consul.ConsulException, match="without service filter"):
        c.event.fire("x", "", tag="v1")


def test_a_transaction_writes_a_node_its_service_and_a_key_or_nothing(store_registry):
    c = client(store_registry)
    b64 = lambda text: base64.b64encode(text.encode()).decode()
    done = c.txn.put([
        {"Node": {"Verb": "set", "Node": {"Node": "cache-host", "Address": "10.2.0.1"}}},
        {"Service": {"Verb": "set", "Node": "cache-host", "Service": {"ID": "redis-1", "Service": "redis", "Port": 6379}}},
        {"Check": {"Verb": "set", "Check": {"Node": "cache-host", "CheckID": "redis-up", "Status": "passing", "ServiceID": "redis-1"}}},
        {"KV": {"Verb": "set", "Key": "cache/primary", "Value": b64("redis-1")}},
    ])
    assert [list(r) for r in done["Results"]] == [["Node"], ["Service"], ["Check"], ["KV"]]
    assert passing_ids(c, "redis") == ["redis-1"]
    index = done["Results"][1]["Service"]["ModifyIndex"]

    # A stale index fails the whole transaction: the key keeps its value.
    with pytest.raises(consul.ConsulException) as failed:
        c.txn.put([
            {"KV": {"Verb": "set", "Key": "cache/primary", "Value": b64("redis-2")}},
            {"Service": {"Verb": "cas", "Node": "cache-host",
                         "Service": {"ID": "redis-1", "Service": "redis", "Port": 7000, "ModifyIndex": index + 1000}}},
        ])
    assert "ModifyIndex does not match" in str(failed.value)
    assert c.kv.get("cache/primary")[1]["Value"] == b"redis-1"
    c.txn.put([{"Node": {"Verb": "delete", "Node": {"Node": "cache-host"}}}])
    assert c.health.service("redis")[1] == []


def test_filtered_health_and_agent_queries(store_registry):
    c = client(store_registry)
    for n, version in [(1, "v1"), (2, "v2"), (3, "v2")]:
        check = consul.Check.ttl("30s")
        c.agent.service.register("api", service_id=f"api-{n}", port=9000 + n, tags=["canary"] if n == 3 else [],
                                 meta={"version": version}, check=check)
    c.agent.check.ttl_pass("service:api-2")
    c.agent.check.ttl_pass("service:api-3")

    def ids(expression):
        _, entries = c.health.service("api", filter_expr=expression)
        return sorted(e["Service"]["ID"] for e in entries)

    assert ids('Service.Meta.version == "v2"') == ["api-2", "api-3"]
    assert ids('Service.Meta.version == "v2" and "canary" not in Service.Tags') == ["api-2"]
    assert ids('Checks.Status contains "critical"') == ["api-1"]
    assert sorted(c.agent.services(filter_expr='Meta.version == "v1"')) == ["api-1"]
    with pytest.raises(consul.ConsulException, match="column"):
        c.health.service("api", filter_expr="Service.Meta.version ==")
