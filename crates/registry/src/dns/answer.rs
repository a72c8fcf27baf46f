//! Answering one DNS message from the catalog. Pure: bytes in, bytes out, no I/O, so the
//! servers stay thin and the fuzzer can drive every path.
//!
//! Consul's rules (consul-compat.md §5): authoritative, TTL 0, instances with a critical check
//! (node checks included) left out, warning kept; answers shuffled on every query; SRV targets
//! `<hex-ip>.addr.<dc>.<domain>` (or `<node>.node...`) with their addresses in the additional
//! section; NXDOMAIN for names that do not exist or have no healthy instance, NODATA for a
//! name without records of the asked type, both with an SOA in the authority section. The
//! apex answers its SOA and NS (this node); zone transfers are NOTIMP.
//!
//! Size: over TCP everything up to 64 KiB. Over UDP, with EDNS0, as much as the client's
//! advertised payload; without it at most [`UDP_ANSWER_LIMIT`] answers (Consul's
//! `udp_answer_limit`) in 512 bytes. Records are dropped to fit; TC is set only when a record
//! had to be dropped for size, not for the answer limit (Consul's default, because HAProxy
//! treats TC as an error on A/AAAA lookups).

use std::collections::HashSet;
use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use wharf_model::Status;

use super::names::{self, Lookup};
use crate::NodeInfo;
use crate::catalog::CatalogState;

/// Answers kept over UDP without EDNS0 (Consul's default `udp_answer_limit`).
pub const UDP_ANSWER_LIMIT: usize = 3;
const UDP_PLAIN_LIMIT: usize = 512;
const TCP_LIMIT: usize = 65_535;
/// The largest UDP payload we answer with, whatever the client advertises.
const EDNS_PAYLOAD: u16 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp = 0,
    Tcp = 1,
}

/// The domains answered and the node the answers speak for.
#[derive(Debug, Clone)]
pub struct Zone {
    /// First the configured domain, then `consul.` unless that is the configured one.
    domains: Vec<Name>,
    node: NodeInfo,
    /// With ACLs on, DNS answers what the anonymous token may read (Consul's DNS uses the
    /// agent's default token, which is the anonymous one unless configured).
    acl: Option<crate::acl::DefaultPolicy>,
}

impl Zone {
    pub fn new(domain: &str, node: NodeInfo) -> Result<Zone, String> {
        let mut domains = Vec::new();
        for d in [domain, "consul"] {
            let name = Name::from_ascii(format!("{}.", d.trim_matches('.')))
                .map_err(|e| format!("invalid DNS domain {d:?}: {e}"))?
                .to_lowercase();
            if !domains.contains(&name) {
                domains.push(name);
            }
        }
        Ok(Zone {
            domains,
            node,
            acl: None,
        })
    }

    /// Answers only what the anonymous token may read, when `acl` is enabled.
    pub fn with_acl(mut self, acl: crate::acl::AclConfig) -> Zone {
        self.acl = acl.enabled.then_some(acl.default_policy);
        self
    }

    /// What one answer may show: everything with ACLs off, else what the anonymous token
    /// may read (resolved once per answer).
    fn reader(&self, state: &CatalogState) -> Reader {
        match self.acl {
            None => Reader::All,
            Some(default) => state
                .acl
                .authorizer(None, default, crate::now_ms())
                .map_or(Reader::Nothing, Reader::Token),
        }
    }
}

/// What one DNS answer may show.
enum Reader {
    All,
    Token(std::sync::Arc<crate::acl::Authorizer>),
    Nothing,
}

impl Reader {
    fn node(&self, node: &str) -> bool {
        match self {
            Reader::All => true,
            Reader::Token(a) => a.allows(crate::acl::Scope::Node(node), crate::acl::Need::Read),
            Reader::Nothing => false,
        }
    }

    /// `instance`, whose node is `node`.
    fn instance(&self, instance: &wharf_model::ServiceInstance, node: &str) -> bool {
        match self {
            Reader::All => true,
            Reader::Token(a) => {
                a.allows(
                    crate::acl::Scope::Service(&instance.name),
                    crate::acl::Need::Read,
                ) && a.allows(crate::acl::Scope::Node(node), crate::acl::Need::Read)
            }
            Reader::Nothing => false,
        }
    }
}

/// Answers `packet`; `None` means stay silent (not even a header to answer).
pub fn answer(
    zone: &Zone,
    state: &CatalogState,
    packet: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    if packet.len() < 12 {
        return None;
    }
    let request = match Message::from_vec(packet) {
        Ok(request) => request,
        Err(_) => return Some(format_error(packet)),
    };
    if request.metadata.message_type != MessageType::Query {
        return None; // never answer answers
    }
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.authoritative = true;
    response.add_queries(request.queries.iter().cloned());
    let limit = size_limit(&request, transport);
    if let Some(edns) = &request.edns {
        let mut echo = Edns::new();
        echo.set_max_payload(EDNS_PAYLOAD);
        if edns.version() > 0 {
            response.metadata.response_code = ResponseCode::BADVERS;
            echo.set_rcode_high(ResponseCode::BADVERS.high());
            response.set_edns(echo);
            return encode(response, limit);
        }
        response.set_edns(echo);
    }
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return encode(response, limit);
    }
    let [query] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return encode(response, limit);
    };
    if !matches!(query.query_class, DNSClass::IN | DNSClass::ANY) {
        response.metadata.response_code = ResponseCode::Refused;
        return encode(response, limit);
    }
    let qname = query.name.to_lowercase();
    let Some(domain) = zone.domains.iter().find(|d| d.zone_of(&qname)).cloned() else {
        response.metadata.response_code = ResponseCode::Refused; // not ours; we do not recurse
        return encode(response, limit);
    };
    if matches!(query.query_type, RecordType::AXFR | RecordType::IXFR) {
        // The zone is the live catalog: there is no copy to transfer.
        response.metadata.response_code = ResponseCode::NotImp;
        return encode(response, limit);
    }
    let labels: Vec<String> = qname
        .iter()
        .take(usize::from(qname.num_labels() - domain.num_labels()))
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let found = if labels.is_empty() {
        Some(apex(zone, &domain, query.query_type))
    } else {
        names::parse(&labels, &zone.node.datacenter)
            .and_then(|lookup| records(zone, state, &domain, query, lookup))
    };
    match found {
        None => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa(&domain));
        }
        Some((answers, additionals)) => {
            if answers.is_empty() {
                response.add_authority(soa(&domain)); // NODATA
            }
            let cap = if transport == Transport::Udp && request.edns.is_none() {
                UDP_ANSWER_LIMIT
            } else {
                usize::MAX
            };
            let kept: Vec<Record> = answers.into_iter().take(cap).collect();
            let targets: HashSet<Name> = kept.iter().filter_map(target_of).collect();
            response.add_answers(kept);
            response.add_additionals(
                additionals
                    .into_iter()
                    .filter(|r| targets.contains(&r.name)),
            );
        }
    }
    encode(response, limit)
}

fn size_limit(request: &Message, transport: Transport) -> usize {
    match (transport, &request.edns) {
        (Transport::Tcp, _) => TCP_LIMIT,
        (Transport::Udp, None) => UDP_PLAIN_LIMIT,
        (Transport::Udp, Some(edns)) => usize::from(edns.max_payload().clamp(512, EDNS_PAYLOAD)),
    }
}

/// The name a record points at, whose addresses go in the additional section.
fn target_of(record: &Record) -> Option<Name> {
    match &record.data {
        RData::SRV(srv) => Some(srv.target.clone()),
        RData::NS(ns) => Some(ns.0.clone()),
        _ => None,
    }
}

/// The zone's apex (`wharf.`, `consul.`): its SOA and its one name server, this node, as
/// Consul answers them; other types are NODATA.
fn apex(zone: &Zone, domain: &Name, qtype: RecordType) -> (Vec<Record>, Vec<Record>) {
    let mut answers = Vec::new();
    let mut additionals = Vec::new();
    if matches!(qtype, RecordType::SOA | RecordType::ANY) {
        answers.push(soa(domain));
    }
    if matches!(qtype, RecordType::NS | RecordType::ANY) {
        let server = format!(
            "{}.node.{}.{}",
            zone.node.name, zone.node.datacenter, domain
        );
        if let Ok(server) = Name::from_ascii(&server) {
            answers.push(Record::from_rdata(
                domain.clone(),
                0,
                RData::NS(NS(server.clone())),
            ));
            if let Ok(ip) = IpAddr::from_str(&zone.node.address) {
                additionals.extend(address_records(&server, RecordType::ANY, [ip]));
            }
        }
    }
    (answers, additionals)
}

/// The answer and additional records for a lookup; `None` when the name does not exist.
fn records(
    zone: &Zone,
    state: &CatalogState,
    domain: &Name,
    query: &Query,
    lookup: Lookup,
) -> Option<(Vec<Record>, Vec<Record>)> {
    let name = query.name.clone();
    let qtype = query.query_type;
    match lookup {
        Lookup::Addr(ip) => Some((address_records(&name, qtype, [ip]), Vec::new())),
        Lookup::Node(node) => {
            if !zone.reader(state).node(&node) {
                return None;
            }
            let address = if node.eq_ignore_ascii_case(&zone.node.name) {
                &zone.node.address
            } else {
                // Another registry node on the same store.
                &state
                    .nodes
                    .values()
                    .find(|n| n.value.name.eq_ignore_ascii_case(&node))?
                    .value
                    .address
            };
            let ip = IpAddr::from_str(address).ok()?;
            Some((address_records(&name, qtype, [ip]), Vec::new()))
        }
        Lookup::Service { name: service, tag } => {
            let candidates = state.instances_of(&service).collect();
            instance_records(zone, state, domain, query, candidates, tag.as_deref())
        }
        Lookup::Connect(service) => {
            let candidates = state.proxies_for(&service).collect();
            instance_records(zone, state, domain, query, candidates, None)
        }
    }
}

/// The records of the healthy `candidates` (carrying `tag`, if given).
fn instance_records(
    zone: &Zone,
    state: &CatalogState,
    domain: &Name,
    query: &Query,
    candidates: Vec<&crate::Stored<wharf_model::ServiceInstance>>,
    tag: Option<&str>,
) -> Option<(Vec<Record>, Vec<Record>)> {
    let name = query.name.clone();
    let qtype = query.query_type;
    // ip, port, weight, and the node whose address it is (`None`: the instance's own)
    let mut healthy: Vec<(IpAddr, u16, u16, Option<&str>)> = Vec::new();
    let reader = zone.reader(state);
    for stored in candidates {
        let instance = &stored.value;
        let node = if instance.node.is_empty() {
            &zone.node.name
        } else {
            &instance.node
        };
        if tag.is_some_and(|t| !instance.has_tag(t)) || !reader.instance(instance, node) {
            continue;
        }
        let status = state.status_of(instance);
        if status == Status::Critical {
            continue;
        }
        // Without an address of its own, an instance is at its registry node's.
        let node = state.node_of(instance).unwrap_or(&zone.node);
        let (ip, at_node) = match IpAddr::from_str(&instance.address) {
            Ok(ip) => (ip, None),
            Err(_) if instance.address.is_empty() => match IpAddr::from_str(&node.address) {
                Ok(ip) => (ip, Some(node.name.as_str())),
                Err(_) => continue,
            },
            Err(_) => continue, // hostnames (CNAME) are not answered yet
        };
        let weight = if status == Status::Warning {
            instance.weights.warning
        } else {
            instance.weights.passing
        };
        healthy.push((
            ip,
            instance.port,
            u16::try_from(weight).unwrap_or(u16::MAX),
            at_node,
        ));
    }
    if healthy.is_empty() {
        return None;
    }
    fastrand::shuffle(&mut healthy);
    match qtype {
        RecordType::SRV => {
            let mut answers = Vec::new();
            let mut additionals = Vec::new();
            let mut seen = HashSet::new();
            for (ip, port, weight, at_node) in healthy {
                let target = match at_node {
                    None => format!(
                        "{}.addr.{}.{}",
                        names::addr_label(ip),
                        zone.node.datacenter,
                        domain
                    ),
                    Some(node) => format!("{node}.node.{}.{domain}", zone.node.datacenter),
                };
                let Ok(target) = Name::from_ascii(&target) else {
                    continue;
                };
                if !seen.insert((target.clone(), port)) {
                    continue;
                }
                let srv = SRV::new(1, weight, port, target.clone());
                answers.push(Record::from_rdata(name.clone(), 0, RData::SRV(srv)));
                additionals.extend(address_records(&target, RecordType::ANY, [ip]));
            }
            Some((answers, additionals))
        }
        _ => Some((
            address_records(&name, qtype, healthy.into_iter().map(|h| h.0)),
            Vec::new(),
        )),
    }
}

/// A and AAAA records for the addresses that match `qtype`, without duplicates.
fn address_records(
    name: &Name,
    qtype: RecordType,
    ips: impl IntoIterator<Item = IpAddr>,
) -> Vec<Record> {
    let mut seen = HashSet::new();
    ips.into_iter()
        .filter(|ip| seen.insert(*ip))
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) if matches!(qtype, RecordType::A | RecordType::ANY) => {
                Some(RData::A(A(v4)))
            }
            IpAddr::V6(v6) if matches!(qtype, RecordType::AAAA | RecordType::ANY) => {
                Some(RData::AAAA(AAAA(v6)))
            }
            _ => None,
        })
        .map(|data| Record::from_rdata(name.clone(), 0, data))
        .collect()
}

fn soa(domain: &Name) -> Record {
    let serial = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let mname = Name::from_ascii("ns")
        .expect("label")
        .append_domain(domain)
        .expect("short name");
    let rname = Name::from_ascii("hostmaster")
        .expect("label")
        .append_domain(domain)
        .expect("short name");
    let soa = SOA::new(mname, rname, serial, 3600, 600, 86400, 0);
    Record::from_rdata(domain.clone(), 0, RData::SOA(soa))
}

/// Encodes `response`; if it is over `limit`, keeps the largest prefix of the answers (with
/// the additional records of their targets) that fits, and sets TC.
fn encode(response: Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let with = |n: usize| -> Option<Vec<u8>> {
        let mut smaller = response.clone();
        smaller.metadata.truncation = true;
        smaller.answers.truncate(n);
        let targets: HashSet<Name> = smaller.answers.iter().filter_map(target_of).collect();
        smaller.additionals.retain(|r| targets.contains(&r.name));
        smaller.to_vec().ok().filter(|b| b.len() <= limit)
    };
    // Binary search for the most answers that fit.
    let (mut low, mut high) = (0, response.answers.len());
    let mut best = with(0);
    while low < high {
        let mid = (low + high).div_ceil(2);
        match with(mid) {
            Some(bytes) => {
                best = Some(bytes);
                low = mid;
            }
            None => high = mid - 1,
        }
    }
    best
}

/// FORMERR for a packet whose header can be read but whose body cannot.
fn format_error(packet: &[u8]) -> Vec<u8> {
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let op_code = OpCode::from_u8((packet[2] >> 3) & 0x0f);
    let mut response = Message::error_msg(id, op_code, ResponseCode::FormErr);
    response.metadata.authoritative = true;
    response.to_vec().unwrap_or_default()
}
