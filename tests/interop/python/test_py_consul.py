"""Unmodified py-consul (PyPI) against `wharf registry`: registration with each kind of check,
TTL updates, catalog and health queries with tag filters, and blocking queries (watches)."""

import threading
import time

import consul
import pytest

from conftest import eventually


def client(registry):
    return consul.Consul(host=registry.host, port=registry.port)


def passing_ids(c, name, **kwargs):
    _, entries = c.health.service(name, passing=True, **kwargs)
    return sorted(e["Service"]["ID"] for e in entries)


def test_http_check_registration_and_health(registry, health_target):
    c = client(registry)
    check = consul.Check.http(health_target.url, "1s", timeout="1s", deregister="10m")
    assert c.agent.service.register("web", service_id="web-1", port=health_target.port,
                                    tags=["v1", "blue"], meta={"version": "1"}, check=check)
    eventually("web-1 passing", lambda: passing_ids(c, "web") == ["web-1"])

    health_target.code = 500
    eventually("web-1 leaves the healthy list", lambda: passing_ids(c, "web") == [])
    _, checks = c.health.checks("web")
    assert checks[0]["Status"] == "critical"
    assert checks[0]["Type"] == "http"
    assert checks[0]["Definition"]["DeregisterCriticalServiceAfter"] == "10m0s"

    health_target.code = 200
    eventually("web-1 back", lambda: passing_ids(c, "web") == ["web-1"])


def test_tcp_and_ttl_checks(registry, tcp_target):
    c = client(registry)
    host, port = tcp_target.getsockname()
    assert c.agent.service.register("db", service_id="db-1", port=port,
                                    check=consul.Check.tcp(host, port, "1s"))
    eventually("db passing", lambda: passing_ids(c, "db") == ["db-1"])

    assert c.agent.service.register("worker", service_id="worker-1",
                                    check=consul.Check.ttl("30s"))
    assert passing_ids(c, "worker") == []
    assert c.agent.check.ttl_pass("service:worker-1", notes="all good")
    checks = c.agent.checks()
    assert checks["service:worker-1"]["Status"] == "passing"
    assert checks["service:worker-1"]["Output"] == "all good"
    assert passing_ids(c, "worker") == ["worker-1"]
    assert c.agent.check.ttl_warn("service:worker-1")
    assert c.agent.checks()["service:worker-1"]["Status"] == "warning"
    assert passing_ids(c, "worker") == [], "?passing drops warning instances"
    assert c.agent.check.ttl_fail("service:worker-1", notes="broken")
    assert c.agent.checks()["service:worker-1"]["Status"] == "critical"


def test_catalog_and_tag_filters(registry):
    c = client(registry)
    c.agent.service.register("api", service_id="api-1", port=9001, tags=["v1", "eu"])
    c.agent.service.register("api", service_id="api-2", port=9002, tags=["v2", "eu"])
    c.agent.service.register("cache", service_id="cache-1", port=6379)

    index, services = c.catalog.services()
    assert int(index) >= 1
    assert sorted(services) == ["api", "cache"]
    assert sorted(services["api"]) == ["eu", "v1", "v2"]

    _, nodes = c.catalog.service("api", tag="v1")
    assert [n["ServiceID"] for n in nodes] == ["api-1"]
    _, entries = c.health.service("api", tag=["eu", "v2"])
    assert [e["Service"]["ID"] for e in entries] == ["api-2"]
    _, entries = c.health.service("api", tag="eu")
    assert sorted(e["Service"]["Port"] for e in entries) == [9001, 9002]

    assert set(c.agent.services()) == {"api-1", "api-2", "cache-1"}
    assert c.agent.service.deregister("api-1")
    _, nodes = c.catalog.service("api")
    assert [n["ServiceID"] for n in nodes] == ["api-2"]
    assert c.agent.service.deregister("api-1") is False, "unknown id answers 404"


def test_blocking_query_wakes_on_change_and_holds_otherwise(registry):
    c = client(registry)
    c.agent.service.register("queue", service_id="queue-1", check=consul.Check.ttl("1h"))
    index, _ = c.health.service("queue")

    # Nothing changes: the query is held for the wait and returns the same index.
    started = time.monotonic()
    same, _ = c.health.service("queue", index=index, wait="2s")
    assert same == index
    assert time.monotonic() - started >= 1.0, "the query was held, not answered at once"

    result = {}

    def watch():
        result["index"], result["entries"] = c.health.service("queue", index=index, wait="60s")

    watcher = threading.Thread(target=watch)
    watcher.start()
    c.agent.check.ttl_pass("service:queue-1")
    watcher.join(timeout=30)
    assert not watcher.is_alive(), "the change woke the blocking query"
    assert int(result["index"]) > int(index)
    assert result["entries"][0]["Checks"][0]["Status"] == "passing"


def test_bad_input_raises(registry):
    c = client(registry)
    with pytest.raises(consul.exceptions.BadRequest, match="invalid duration"):
        c.agent.service.register("bad", check={"http": "http://127.0.0.1:1/", "interval": "sometimes"})
    assert "bad" not in c.agent.services()
    assert c.agent.check.ttl_pass("no-such-check") is False, "unknown check answers 404"


def test_status_and_self(registry):
    c = client(registry)
    assert c.status.leader()
    me = c.agent.self()
    assert me["Config"]["Datacenter"] == "dc1"
