"""Consul Connect's CA and intentions through py-consul's own `connect` API, against a real
`wharf registry`; the certificates it hands out are checked with `openssl`."""

import subprocess

import consul


def client(registry):
    return consul.Consul(host=registry.host, port=registry.port)


def test_ca_roots_and_configuration(registry, tmp_path):
    c = client(registry)
    roots = c.connect.ca.roots()
    assert roots["TrustDomain"].endswith(".consul")
    active = [r for r in roots["Roots"] if r["Active"]]
    assert len(active) == 1 and active[0]["ID"] == roots["ActiveRootID"]
    assert "BEGIN CERTIFICATE" in active[0]["RootCert"]

    config = c.connect.ca.configuration()
    assert config["Provider"] == "consul"
    assert config["Config"]["LeafCertTTL"] == "259200s"

    # py-consul's own configuration update rotates the root when given a new key.
    key = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        check=True, capture_output=True, text=True,
    ).stdout
    assert c.connect.ca.update_configuration("consul", {"PrivateKey": key}) is True
    rotated = c.connect.ca.roots()
    assert rotated["ActiveRootID"] != roots["ActiveRootID"]
    assert {r["ID"] for r in rotated["Roots"]} == {rotated["ActiveRootID"], roots["ActiveRootID"]}

    # A bad key is refused with a reason and changes nothing.
    try:
        c.connect.ca.update_configuration("consul", {"PrivateKey": "garbage"})
        raise AssertionError("a bad key was accepted")
    except consul.ConsulException as error:
        assert "Invalid CA configuration" in str(error)
    assert c.connect.ca.roots()["ActiveRootID"] == rotated["ActiveRootID"]


def test_intentions_round_trip(registry):
    c = client(registry)
    assert c.connect.intentions.upsert("web", "db", action="allow", description="web reads db") is True
    assert c.connect.intentions.upsert("*", "db", action="deny") is True
    intention = c.connect.intentions.read("web", "db")
    assert intention["Action"] == "allow"
    assert intention["Description"] == "web reads db"
    assert intention["Precedence"] == 9
    assert c.connect.intentions.check("web", "db") is True
    assert c.connect.intentions.check("api", "db") is False
    matched = c.connect.intentions.match("destination", "db")
    assert [(i["SourceName"], i["DestinationName"]) for i in matched["db"]] == [("web", "db"), ("*", "db")]
    assert len(c.connect.intentions.list()) == 2
    assert c.connect.intentions.delete("web", "db") is True
    assert c.connect.intentions.check("web", "db") is False
    try:
        c.connect.intentions.upsert("web", "db", action="maybe")
        raise AssertionError("an unknown action was accepted")
    except consul.ConsulException as error:
        assert "Failed to decode intention body" in str(error)


def test_service_intentions_config_entries(registry):
    c = client(registry)
    sources = [
        {"Name": "web", "Action": "allow"},
        {"Name": "*", "Action": "deny"},
        {"Name": "admin", "Permissions": [{"Action": "allow", "HTTP": {"PathPrefix": "/admin"}}]},
    ]
    assert c.config.set("service-intentions", "billing", {"Sources": sources}) is True
    entry = c.config.get("service-intentions", "billing")
    assert [s["Name"] for s in entry["Sources"]] == ["admin", "web", "*"]
    # The entry's sources are intentions like any other.
    assert c.connect.intentions.check("web", "billing") is True
    assert c.connect.intentions.check("api", "billing") is False
    assert "billing" in [e["Name"] for e in c.config.list("service-intentions")]
    # A stale cas writes nothing; the current one does.
    assert c.config.set("service-intentions", "billing", {"Sources": sources[:1]}, cas=1) is False
    assert c.config.set(
        "service-intentions", "billing", {"Sources": sources[:1]}, cas=entry["ModifyIndex"]
    ) is True
    assert [s["Name"] for s in c.config.get("service-intentions", "billing")["Sources"]] == ["web"]
    assert c.config.delete("service-intentions", "billing") is True
    assert c.config.get("service-intentions", "billing") is None, "a 404 after the delete"
    # Kinds Wharf does not keep yet raise with the kind named.
    try:
        c.config.set("service-defaults", "billing", {"Protocol": "http"})
        raise AssertionError("an unimplemented kind was accepted")
    except consul.ConsulException as error:
        assert "service-defaults" in str(error)
