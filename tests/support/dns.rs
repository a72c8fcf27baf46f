//! A DNS client for tests: one question over real UDP or TCP, with or without EDNS0.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

pub(crate) fn question(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::query();
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(size);
        message.set_edns(opt);
    }
    message.to_vec().unwrap()
}

/// Sends raw bytes over UDP; `None` if nothing came back within a second.
pub(crate) fn udp_raw(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    socket.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 65_535];
    let (len, _) = socket.recv_from(&mut buf).ok()?;
    buf.truncate(len);
    Some(buf)
}

pub(crate) fn udp(server: SocketAddr, name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let reply = udp_raw(server, &question(name, qtype, edns)).expect("an answer over UDP");
    Message::from_vec(&reply).expect("a well-formed answer")
}

pub(crate) fn tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    exchange(&mut stream, name, qtype)
}

/// One question over DNS over TLS (RFC 7858), the server's certificate checked against the
/// CA in `ca_pem` for the name `127.0.0.1`; the handshake's failure is the error.
pub(crate) fn tls(
    server: SocketAddr,
    ca_pem: &[u8],
    name: &str,
    qtype: RecordType,
) -> Result<Message, std::io::Error> {
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"dot".to_vec()];
    let connection = rustls::ClientConnection::new(
        Arc::new(config),
        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(server)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    // The handshake runs on the first write; its failure comes back as an error.
    stream.flush()?;
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(exchange(&mut stream, name, qtype))
}

/// One length-prefixed question and its answer on a stream.
fn exchange(stream: &mut (impl Read + Write), name: &str, qtype: RecordType) -> Message {
    let packet = question(name, qtype, None);
    stream
        .write_all(&(packet.len() as u16).to_be_bytes())
        .unwrap();
    stream.write_all(&packet).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply).unwrap();
    Message::from_vec(&reply).unwrap()
}

/// Ports of the SRV answers, sorted.
pub(crate) fn srv_ports(message: &Message) -> Vec<u16> {
    let mut ports: Vec<u16> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.port),
            _ => None,
        })
        .collect();
    ports.sort_unstable();
    ports
}

/// Addresses of the A answers, as text, sorted.
pub(crate) fn a_records(message: &Message) -> Vec<String> {
    let mut ips: Vec<String> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}
