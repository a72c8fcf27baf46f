//! The DNS interface of a real `wharf registry`, over real UDP and TCP sockets.

use crate::support::dns;
use crate::support::*;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;

fn register(registry: &RegistryProcess, body: serde_json::Value) {
    let response = registry.put("/v1/agent/service/register", &body.to_string());
    assert_eq!(response.status, 200, "{}", response.text());
}

/// `count` instances of `name` on 127.0.0.1, ports 9001.., TTL checks passing, tag `v<i>`.
fn instances(registry: &RegistryProcess, name: &str, count: u16) {
    for i in 1..=count {
        register(
            registry,
            json!({"Name": name, "ID": format!("{name}-{i}"), "Address": "127.0.0.1",
            "Port": 9000 + i, "Tags": [format!("v{i}"), "all"], "Check": {"TTL": "1h", "Status": "passing"}}),
        );
    }
}

#[test]
fn srv_and_a_answers_list_exactly_the_healthy_instances() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    instances(&registry, "hello", 3);
    let answer = dns::udp(
        registry.dns,
        "hello.service.wharf.",
        RecordType::SRV,
        Some(4096),
    );
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert_eq!(dns::srv_ports(&answer), [9001, 9002, 9003]);
    let RData::SRV(srv) = &answer.answers[0].data else {
        panic!("SRV")
    };
    assert_eq!(srv.target.to_ascii(), "7f000001.addr.dc1.wharf.");
    assert_eq!(answer.answers[0].ttl, 0);
    assert!(
        answer
            .additionals
            .iter()
            .any(|r| r.name == srv.target && matches!(r.data, RData::A(_))),
        "the target's address is in the additional section"
    );

    // A status change shows in the very next answer.
    registry.put("/v1/agent/check/fail/service:hello-2", "");
    let answer = dns::udp(
        registry.dns,
        "hello.service.wharf.",
        RecordType::SRV,
        Some(4096),
    );
    assert_eq!(dns::srv_ports(&answer), [9001, 9003]);
    registry.put("/v1/agent/check/warn/service:hello-2", "");
    let answer = dns::udp(
        registry.dns,
        "hello.service.wharf.",
        RecordType::SRV,
        Some(4096),
    );
    assert_eq!(
        dns::srv_ports(&answer),
        [9001, 9002, 9003],
        "warning instances are kept"
    );

    let a = dns::udp(registry.dns, "hello.service.wharf.", RecordType::A, None);
    assert_eq!(
        dns::a_records(&a),
        ["127.0.0.1"],
        "one A record per distinct address"
    );
    let consul = dns::udp(
        registry.dns,
        "HELLO.service.CONSUL.",
        RecordType::SRV,
        Some(4096),
    );
    assert_eq!(
        dns::srv_ports(&consul),
        [9001, 9002, 9003],
        "consul domain, any case"
    );
}

#[test]
fn tag_and_rfc2782_forms() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    instances(&registry, "web", 3);
    let ports =
        |name: &str| dns::srv_ports(&dns::udp(registry.dns, name, RecordType::SRV, Some(4096)));
    assert_eq!(ports("v2.web.service.wharf."), [9002]);
    assert_eq!(
        ports("_web._tcp.service.wharf."),
        [9001, 9002, 9003],
        "_tcp is no tag filter"
    );
    assert_eq!(ports("_web._v3.service.wharf."), [9003]);
    assert_eq!(
        ports("_web._tcp.wharf."),
        [9001, 9002, 9003],
        ".service may be left out"
    );
    assert_eq!(ports("web.service.dc1.wharf."), [9001, 9002, 9003]);
    let none = dns::udp(registry.dns, "v9.web.service.wharf.", RecordType::SRV, None);
    assert_eq!(none.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn nxdomain_nodata_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    instances(&registry, "db", 1);
    let unknown = dns::udp(registry.dns, "nope.service.wharf.", RecordType::A, None);
    assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        matches!(unknown.authorities[0].data, RData::SOA(_)),
        "SOA in the authority section"
    );

    let nodata = dns::udp(registry.dns, "db.service.wharf.", RecordType::AAAA, None);
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert!(matches!(nodata.authorities[0].data, RData::SOA(_)));
    let txt = dns::udp(registry.dns, "db.service.wharf.", RecordType::TXT, None);
    assert_eq!(
        (txt.metadata.response_code, txt.answers.len()),
        (ResponseCode::NoError, 0)
    );

    registry.put("/v1/agent/check/fail/service:db-1", "");
    let critical = dns::udp(registry.dns, "db.service.wharf.", RecordType::A, None);
    assert_eq!(
        critical.metadata.response_code,
        ResponseCode::NXDomain,
        "no healthy instance"
    );

    let elsewhere = dns::udp(registry.dns, "example.com.", RecordType::A, None);
    assert_eq!(
        elsewhere.metadata.response_code,
        ResponseCode::Refused,
        "not ours, no recursion"
    );
}

#[test]
fn addr_and_node_names() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &["--node", "box1"]);
    let addr = dns::udp(
        registry.dns,
        "7f000001.addr.dc1.wharf.",
        RecordType::A,
        None,
    );
    assert_eq!(dns::a_records(&addr), ["127.0.0.1"]);
    let node = dns::udp(registry.dns, "box1.node.wharf.", RecordType::A, None);
    assert_eq!(dns::a_records(&node), ["127.0.0.1"]);
    // An instance without an address is reached at its node: the SRV target says so.
    register(&registry, json!({"Name": "bare", "Port": 7000}));
    let srv = dns::udp(
        registry.dns,
        "bare.service.wharf.",
        RecordType::SRV,
        Some(4096),
    );
    let RData::SRV(record) = &srv.answers[0].data else {
        panic!("SRV")
    };
    assert_eq!(record.target.to_ascii(), "box1.node.dc1.wharf.");
}

#[test]
fn answer_sizes_over_udp_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    instances(&registry, "many", 10);
    let plain = dns::udp(registry.dns, "many.service.wharf.", RecordType::SRV, None);
    assert_eq!(
        plain.answers.len(),
        3,
        "Consul's UDP answer limit without EDNS0"
    );
    assert!(
        !plain.metadata.truncation,
        "the answer limit is not truncation"
    );
    let edns = dns::udp(
        registry.dns,
        "many.service.wharf.",
        RecordType::SRV,
        Some(4096),
    );
    assert_eq!(edns.answers.len(), 10, "EDNS0 gets everything that fits");
    assert!(edns.edns.is_some(), "the OPT record is echoed");
    let tcp = dns::tcp(registry.dns, "many.service.wharf.", RecordType::SRV);
    assert_eq!(tcp.answers.len(), 10, "TCP gets everything");

    // Shuffled: over many answers, more than one instance comes first.
    let firsts: std::collections::HashSet<u16> = (0..40)
        .map(|_| {
            dns::srv_ports(&dns::udp(
                registry.dns,
                "many.service.wharf.",
                RecordType::SRV,
                None,
            ))[0]
        })
        .collect();
    assert!(firsts.len() > 1, "answers are shuffled");
}

#[test]
fn bad_packets_get_an_error_code_or_silence_and_stall_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    instances(&registry, "ok", 1);
    // Shorter than a header: nothing to answer.
    assert_eq!(dns::udp_raw(registry.dns, &[1, 2, 3]), None);
    // A header that promises a question that is not there: FORMERR with the same id.
    let truncated = [0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    let reply =
        hickory_proto::op::Message::from_vec(&dns::udp_raw(registry.dns, &truncated).unwrap())
            .unwrap();
    assert_eq!(
        (reply.metadata.id, reply.metadata.response_code),
        (0xabcd, ResponseCode::FormErr)
    );
    // A name that points to itself (compression loop).
    let mut looped = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    looped.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
    let reply = hickory_proto::op::Message::from_vec(&dns::udp_raw(registry.dns, &looped).unwrap())
        .unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // A label over 63 bytes.
    let mut long = vec![0x12, 0x35, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 64];
    long.extend_from_slice(&[b'a'; 64]);
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    let reply =
        hickory_proto::op::Message::from_vec(&dns::udp_raw(registry.dns, &long).unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // An answer sent to us is not answered (no reflection loops).
    let mut response = dns::question("ok.service.wharf.", RecordType::A, None);
    response[2] |= 0x80;
    assert_eq!(dns::udp_raw(registry.dns, &response), None);
    // Unknown class: refused. Unknown type: NODATA.
    let mut chaos = dns::question("ok.service.wharf.", RecordType::A, None);
    let len = chaos.len();
    chaos[len - 1] = 3; // CH
    let reply =
        hickory_proto::op::Message::from_vec(&dns::udp_raw(registry.dns, &chaos).unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    let odd = dns::udp(
        registry.dns,
        "ok.service.wharf.",
        RecordType::Unknown(65_000),
        None,
    );
    assert_eq!(
        (odd.metadata.response_code, odd.answers.len()),
        (ResponseCode::NoError, 0)
    );
    // A TCP client that sends half a message and goes quiet does not stall anyone.
    let mut stalled = std::net::TcpStream::connect(registry.dns).unwrap();
    std::io::Write::write_all(&mut stalled, &[0, 40, 1, 2]).unwrap();
    // ... and through all of that, real questions are answered.
    let fine = dns::udp(registry.dns, "ok.service.wharf.", RecordType::A, None);
    assert_eq!(fine.metadata.message_type, MessageType::Response);
    assert_eq!(dns::a_records(&fine), ["127.0.0.1"]);
    assert_eq!(
        dns::tcp(registry.dns, "ok.service.wharf.", RecordType::A)
            .answers
            .len(),
        1
    );
    drop(stalled);
}

#[test]
fn the_apex_answers_its_soa_and_ns_and_zone_transfers_are_not_implemented() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &["--node", "alpha"]);
    for domain in ["wharf.", "consul."] {
        let soa = dns::udp(registry.dns, domain, RecordType::SOA, None);
        assert_eq!(
            soa.metadata.response_code,
            ResponseCode::NoError,
            "{domain}"
        );
        assert!(
            matches!(&soa.answers[..], [r] if matches!(&r.data, RData::SOA(s) if s.mname.to_ascii() == format!("ns.{domain}"))),
            "{domain} SOA: {:?}",
            soa.answers
        );

        let ns = dns::udp(registry.dns, domain, RecordType::NS, None);
        assert_eq!(ns.metadata.response_code, ResponseCode::NoError, "{domain}");
        let server = format!("alpha.node.dc1.{domain}");
        assert!(
            matches!(&ns.answers[..], [r] if matches!(&r.data, RData::NS(n) if n.0.to_ascii() == server)),
            "{domain} NS: {:?}",
            ns.answers
        );
        assert!(
            ns.additionals.iter().any(|r| r.name.to_ascii() == server
                && matches!(&r.data, RData::A(a) if a.0.to_string() == "127.0.0.1")),
            "the name server's address comes along: {:?}",
            ns.additionals
        );

        let a = dns::udp(registry.dns, domain, RecordType::A, None);
        assert_eq!(
            a.metadata.response_code,
            ResponseCode::NoError,
            "apex A is NODATA"
        );
        assert!(a.answers.is_empty());
        assert!(matches!(&a.authorities[..], [r] if matches!(r.data, RData::SOA(_))));

        for transfer in [RecordType::AXFR, RecordType::IXFR] {
            let answer = dns::tcp(registry.dns, domain, transfer);
            assert_eq!(
                answer.metadata.response_code,
                ResponseCode::NotImp,
                "{domain} {transfer}"
            );
            assert!(answer.answers.is_empty());
        }
    }
}

#[test]
fn connect_names_answer_the_sidecars_of_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    instances(&registry, "web", 1);
    register(
        &registry,
        json!({"Name": "web-sidecar-proxy", "ID": "web-1-sidecar-proxy", "Address": "127.0.0.1",
            "Port": 21000, "Kind": "connect-proxy", "Proxy": {"DestinationServiceName": "web"},
            "Check": {"TTL": "1h", "Status": "passing"}}),
    );
    let connect = dns::udp(registry.dns, "web.connect.consul.", RecordType::SRV, None);
    assert_eq!(connect.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        dns::srv_ports(&connect),
        [21000],
        "the sidecar, not the app"
    );
    let plain = dns::udp(registry.dns, "web.service.consul.", RecordType::SRV, None);
    assert_eq!(dns::srv_ports(&plain), [9001], "the app itself");
    let none = dns::udp(registry.dns, "db.connect.consul.", RecordType::SRV, None);
    assert_eq!(none.metadata.response_code, ResponseCode::NXDomain);
}

/// `--dns-tls`: DNS over TCP becomes DNS over TLS with the API's certificate; a client that
/// checks it with the CA gets its answers, plaintext TCP gets none, and UDP stays plain.
#[test]
fn dns_over_tcp_can_listen_with_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::support::certs::issue(dir.path());
    let registry = RegistryProcess::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            certs.server_cert.to_str().unwrap(),
            "--tls-key",
            certs.server_key.to_str().unwrap(),
            "--dns-tls",
        ],
    );
    let url = format!("https://{}", registry.addr);
    let register = std::process::Command::new(WHARF)
        .args(["register", "hello", "--port", "9001", "--registry", &url])
        .env("WHARF_CACERT", &certs.ca)
        .output()
        .unwrap();
    assert!(register.status.success(), "{register:?}");

    let ca = std::fs::read(&certs.ca).unwrap();
    let answer = dns::tls(registry.dns, &ca, "hello.service.wharf.", RecordType::SRV)
        .expect("a DNS-over-TLS answer");
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(dns::srv_ports(&answer), [9001]);

    // A client that does not trust the CA is refused in the handshake.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let stranger = crate::support::certs::issue(&other);
    let other_ca = std::fs::read(&stranger.ca).unwrap();
    assert!(
        dns::tls(
            registry.dns,
            &other_ca,
            "hello.service.wharf.",
            RecordType::SRV
        )
        .is_err()
    );

    // Plaintext TCP gets no answer; UDP still answers.
    let mut plain = std::net::TcpStream::connect(registry.dns).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let packet = dns::question("hello.service.wharf.", RecordType::SRV, None);
    let _ = std::io::Write::write_all(&mut plain, &(packet.len() as u16).to_be_bytes());
    let _ = std::io::Write::write_all(&mut plain, &packet);
    let mut reply = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut reply);
    assert!(
        Message::from_vec(reply.get(2..).unwrap_or_default()).is_err(),
        "no DNS answer in plaintext"
    );
    let udp = dns::udp(
        registry.dns,
        "hello.service.wharf.",
        RecordType::SRV,
        Some(4096),
    );
    assert_eq!(dns::srv_ports(&udp), [9001]);
}
