//! Any bytes as an HTTP/1.x request head (and what follows as a response head and a chunked
//! body), through the proxy's parsers and writers: nothing panics, and the head the proxy
//! would send upstream parses again with the same framing — so what the proxy forwards is
//! never read differently by the next hop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_proxy::h1::body::Chunked;
use wharf_proxy::h1::head::{
    parse_request, parse_response, request_facts, response_facts, write_request,
    write_response, Delivery, Head, HeadError,
};

fuzz_target!(|data: &[u8]| {
    let mut head = Head::default();
    if let Ok(true) = parse_request(data, &mut head) {
        if let Ok(facts) = request_facts(data, &head) {
            let mut upstream = Vec::new();
            write_request(&mut upstream, data, &head, &facts, b"127.0.0.1");
            let mut again = Head::default();
            match parse_request(&upstream, &mut again) {
                Ok(true) => {
                    let refacts = request_facts(&upstream, &again)
                        .expect("the proxy's own head reads back");
                    assert_eq!(refacts.body, facts.body);
                    assert_eq!(refacts.upgrade, facts.upgrade);
                }
                // Fields the proxy adds can push a head at the limit over it.
                Err(HeadError::TooManyFields | HeadError::TooLarge) => {}
                other => panic!("the proxy's own head does not parse: {other:?}"),
            }
            let rest = &data[head.len..];
            let mut response = Head::default();
            if let Ok(true) = parse_response(rest, &mut response) {
                if let Ok(answer) = response_facts(rest, &response, &facts) {
                    let mut out = Vec::new();
                    let delivery = Delivery {
                        body: answer.body,
                        dechunk: false,
                        close: false,
                    };
                    write_response(&mut out, rest, &response, delivery, 1);
                    let mut again = Head::default();
                    if let Ok(true) = parse_response(&out, &mut again) {
                        let refacts = response_facts(&out, &again, &facts)
                            .expect("the proxy's own response head reads back");
                        assert_eq!(refacts.body, answer.body);
                    }
                }
            }
        }
    }
    let mut chunked = Chunked::default();
    if let Ok((used, _)) = chunked.scan(data, |range| assert!(range.end <= data.len())) {
        assert!(used <= data.len());
    }
});
