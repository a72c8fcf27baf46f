"""py-consul against Wharf's ACLs: bootstrap, a policy and a token made through the client's
own ACL API, and every call held to its token's policy as Consul holds it."""

import json

import consul
import pytest

# py-consul sends rules as JSON (it encodes what it is given), Consul's other rule syntax.
WEB_RULES = {"service": {"web": {"policy": "write"}}, "node_prefix": {"": {"policy": "read"}}}


def test_py_consul_bootstraps_and_each_client_is_held_to_its_token(acl_registry):
    host, port = acl_registry.host, acl_registry.port
    anonymous = consul.Consul(host=host, port=port)
    root = anonymous.acl.bootstrap()
    assert root["Policies"][0]["Name"] == "global-management"
    admin = consul.Consul(host=host, port=port, token=root["SecretID"])
    assert admin.acl.token.read_self()["AccessorID"] == root["AccessorID"]

    policy = admin.acl.policy.create("web", rules=WEB_RULES, description="the web team")
    assert json.loads(admin.acl.policy.read(policy["ID"])["Rules"]) == WEB_RULES
    assert "web" in [p["Name"] for p in admin.acl.policy.list()]
    token = admin.acl.token.create(policies_name=["web"], description="web deploys")
    web = consul.Consul(host=host, port=port, token=token["SecretID"])
    assert web.acl.token.read_self()["Policies"] == [{"ID": policy["ID"], "Name": "web"}]

    # Writes: web may register web, not db; no token may register nothing.
    assert web.agent.service.register("web", service_id="web-1", port=9000)
    with pytest.raises(consul.ACLPermissionDenied):
        web.agent.service.register("db", service_id="db-1", port=5432)
    with pytest.raises(consul.ACLPermissionDenied):
        anonymous.agent.service.register("web", service_id="web-2", port=9001)
    assert admin.agent.service.register("db", service_id="db-1", port=5432)

    # Reads follow policy.
    assert sorted(web.catalog.services()[1]) == ["web"]
    assert sorted(admin.catalog.services()[1]) == ["db", "web"]
    assert anonymous.catalog.services()[1] == {}
    assert web.health.service("db")[1] == []

    # Managing ACLs takes an acl rule; a deleted token is unknown.
    with pytest.raises(consul.ACLPermissionDenied):
        web.acl.token.list()
    assert token["AccessorID"] in [t["AccessorID"] for t in admin.acl.token.list()]
    assert admin.acl.token.delete(token["AccessorID"])
    with pytest.raises(consul.ACLPermissionDenied):
        web.catalog.services()


def test_acl_calls_raise_acl_disabled_when_acls_are_off(registry):
    with pytest.raises(consul.ACLDisabled):
        consul.Consul(host=registry.host, port=registry.port).acl.bootstrap()
