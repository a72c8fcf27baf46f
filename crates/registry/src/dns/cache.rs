//! A per-worker cache of encoded answers, valid for one catalog revision.
//!
//! Most DNS traffic asks the same few questions over and over (every client of a service asks
//! for that service), and an answer only changes when the catalog does. So each UDP worker
//! keeps, per question, a few encoded answers in different shuffled orders, computed once per
//! catalog revision. A hit costs a hash lookup and a copy: the request's id, RD flag and
//! question bytes (whose letter case a resolver may have randomised) are written over the
//! cached bytes; nothing else in an answer depends on the request. Only plain questions take
//! this path — one question, no compression, at most an EDNS0 OPT record of version 0 —
//! everything else goes to [`answer`] as before.

use std::collections::HashMap;

use super::answer::{Transport, Zone, answer};
use crate::catalog::CatalogState;

/// Shuffled variants kept per question.
const VARIANTS: usize = 8;
/// Questions kept per revision; past this the cache starts over (random names cannot grow it).
const MAX_ENTRIES: usize = 4096;

/// One worker's cache.
#[derive(Debug, Default)]
pub struct AnswerCache {
    revision: u64,
    entries: HashMap<Vec<u8>, Variants>,
    /// Reused for every key, so that a hit allocates nothing.
    key: Vec<u8>,
}

#[derive(Debug)]
struct Variants {
    answers: Vec<Vec<u8>>,
    next: usize,
}

impl AnswerCache {
    /// Answers `packet` as [`answer`] would, from the cache when possible, into `reply`.
    /// Returns `false` when there is nothing to send.
    pub fn answer_into(
        &mut self,
        zone: &Zone,
        state: &CatalogState,
        packet: &[u8],
        transport: Transport,
        reply: &mut Vec<u8>,
    ) -> bool {
        reply.clear();
        let mut key = std::mem::take(&mut self.key);
        let Some(question_len) = plain_question_key(packet, transport, &mut key) else {
            self.key = key;
            return match answer(zone, state, packet, transport) {
                Some(bytes) => {
                    reply.extend_from_slice(&bytes);
                    true
                }
                None => false,
            };
        };
        if self.revision != state.revision() || self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
            self.revision = state.revision();
        }
        if !self.entries.contains_key(key.as_slice()) {
            let mut answers = Vec::with_capacity(VARIANTS);
            for _ in 0..VARIANTS {
                let Some(encoded) = answer(zone, state, packet, transport) else {
                    self.key = key;
                    return false;
                };
                if !answers.contains(&encoded) {
                    answers.push(encoded);
                }
            }
            self.entries
                .insert(key.clone(), Variants { answers, next: 0 });
        }
        let sent = match self.entries.get_mut(key.as_slice()) {
            Some(variants) => {
                reply.extend_from_slice(&variants.answers[variants.next % variants.answers.len()]);
                variants.next = variants.next.wrapping_add(1);
                true
            }
            None => false,
        };
        self.key = key;
        if !sent || reply.len() < 12 + question_len {
            return false;
        }
        // Id, RD flag and the question as the client wrote it.
        reply[..2].copy_from_slice(&packet[..2]);
        reply[2] = (reply[2] & !0x01) | (packet[2] & 0x01);
        reply[12..12 + question_len].copy_from_slice(&packet[12..12 + question_len]);
        true
    }

    /// [`AnswerCache::answer_into`] into a new buffer.
    pub fn answer(
        &mut self,
        zone: &Zone,
        state: &CatalogState,
        packet: &[u8],
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let mut reply = Vec::new();
        self.answer_into(zone, state, packet, transport, &mut reply)
            .then_some(reply)
    }
}

/// For a plain question: writes the cache key into `key` and returns the length of the
/// question section.
fn plain_question_key(packet: &[u8], transport: Transport, key: &mut Vec<u8>) -> Option<usize> {
    let header = packet.get(..12)?;
    let (qr, opcode) = (header[2] & 0x80, (header[2] >> 3) & 0x0f);
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if qr != 0 || opcode != 0 || count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    key.clear();
    key.push(transport as u8);
    let mut at = 12;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len & 0xc0 != 0 || at - 12 + len + 1 > 255 {
            return None; // compression or an over-long name: the slow path decides
        }
        key.extend(
            packet
                .get(at..at + 1 + len)?
                .iter()
                .map(u8::to_ascii_lowercase),
        );
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    key.extend_from_slice(packet.get(at..at + 4)?);
    at += 4;
    let question_len = at - 12;
    if count(10) == 0 {
        key.push(0);
        return (at == packet.len()).then_some(question_len);
    }
    // One OPT record: root name, type 41, class = payload size, TTL = rcode/version/flags.
    let opt = packet.get(at..at + 11)?;
    if opt[0] != 0 || opt[1..3] != [0, 41] || opt[6] != 0 {
        return None;
    }
    let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
    if at + 11 + rdlen != packet.len() {
        return None;
    }
    let payload = u16::from_be_bytes([opt[3], opt[4]]).clamp(512, 4096);
    key.push(1);
    key.extend_from_slice(&payload.to_be_bytes());
    Some(question_len)
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use wharf_model::registration::decode_service_registration;

    use super::*;
    use crate::NodeInfo;

    fn state() -> CatalogState {
        let mut instances = Vec::new();
        let mut checks = Vec::new();
        for i in 1..=5 {
            let body =
                format!(r#"{{"Name":"web","ID":"web-{i}","Address":"127.0.0.{i}","Port":{i}}}"#);
            let registration = decode_service_registration(body.as_bytes()).unwrap();
            instances.push(registration.service);
            checks.extend(registration.checks);
        }
        CatalogState::from_records(instances, checks)
    }

    fn question(id: u16, name: &str, edns: bool) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = id;
        message.metadata.recursion_desired = id.is_multiple_of(2);
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if edns {
            message.set_edns(Edns::new());
        }
        message.to_vec().unwrap()
    }

    #[test]
    fn cached_answers_match_fresh_ones_but_for_order() {
        let zone = Zone::new("wharf", NodeInfo::local("n".into())).unwrap();
        let state = state();
        let mut cache = AnswerCache::default();
        for (id, name, edns) in [
            (1, "web.service.wharf.", false),
            (2, "WeB.Service.wharf.", true),
            (3, "web.service.wharf.", true),
        ] {
            let packet = question(id, name, edns);
            assert!(plain_question_key(&packet, Transport::Udp, &mut Vec::new()).is_some());
            for _ in 0..3 {
                let cached = Message::from_vec(
                    &cache
                        .answer(&zone, &state, &packet, Transport::Udp)
                        .unwrap(),
                )
                .unwrap();
                let fresh =
                    Message::from_vec(&answer(&zone, &state, &packet, Transport::Udp).unwrap())
                        .unwrap();
                assert_eq!(
                    cached.metadata, fresh.metadata,
                    "id, flags and codes as a fresh answer"
                );
                assert_eq!(
                    cached.queries, fresh.queries,
                    "the question as the client wrote it"
                );
                let sorted = |m: &Message| {
                    let mut a: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
                    a.sort();
                    a
                };
                assert_eq!(cached.answers.len(), fresh.answers.len());
                if edns {
                    assert_eq!(sorted(&cached), sorted(&fresh), "EDNS0: every instance");
                } else {
                    let all = [
                        "127.0.0.1",
                        "127.0.0.2",
                        "127.0.0.3",
                        "127.0.0.4",
                        "127.0.0.5",
                    ];
                    assert!(
                        sorted(&cached).iter().all(|ip| all.contains(&ip.as_str())),
                        "3 of the 5"
                    );
                }
                assert_eq!(cached.edns.is_some(), edns);
            }
        }
    }

    #[test]
    fn unusual_questions_take_the_slow_path() {
        let plain = question(7, "web.service.wharf.", false);
        let mut two_questions = plain.clone();
        two_questions[5] = 2;
        assert!(plain_question_key(&two_questions, Transport::Udp, &mut Vec::new()).is_none());
        let mut compressed = plain.clone();
        compressed[12] = 0xc0;
        assert!(plain_question_key(&compressed, Transport::Udp, &mut Vec::new()).is_none());
        let mut response = plain.clone();
        response[2] |= 0x80;
        assert!(plain_question_key(&response, Transport::Udp, &mut Vec::new()).is_none());
        let mut trailing = plain;
        trailing.push(0);
        assert!(plain_question_key(&trailing, Transport::Udp, &mut Vec::new()).is_none());
    }
}
