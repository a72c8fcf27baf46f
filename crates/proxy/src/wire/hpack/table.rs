//! HPACK's two tables (RFC 7541 §2.3): the static one (Appendix A) and a connection's
//! dynamic one, which holds checked fields (or that they were malformed) and their sizes.

use std::collections::VecDeque;
use std::sync::LazyLock;

use http::{HeaderName, HeaderValue};

use super::{Field, Malformed, Name, Pseudo};

/// The static table's entries, index 1 first: name and value.
pub(super) static STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// An entry of either table: its name and value as checked when it was added (a malformed
/// name may come with a valid value, and the other way round: a literal may reuse either),
/// and their lengths as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) name: Result<Name, Malformed>,
    pub(super) value: Result<HeaderValue, Malformed>,
    pub(super) name_len: usize,
    pub(super) value_len: usize,
}

impl Entry {
    /// What the entry counts for in a table, or in a header list (RFC 7541 §4.1).
    pub(super) fn size(&self) -> usize {
        self.name_len + self.value_len + ENTRY_OVERHEAD
    }

    pub(super) fn field(&self) -> Result<Field, Malformed> {
        Ok(Field {
            name: self.name.clone()?,
            value: self.value.clone()?,
        })
    }
}

/// The static table as entries, made once: a name is checked when it is made.
static STATIC_ENTRIES: LazyLock<Vec<Entry>> = LazyLock::new(|| {
    STATIC
        .iter()
        .map(|&(name, value)| Entry {
            name: Ok(static_name(name)),
            value: Ok(HeaderValue::from_static(value)),
            name_len: name.len(),
            value_len: value.len(),
        })
        .collect()
});

/// The static entry at `index` (1 to 61).
pub(super) fn static_entry(index: usize) -> Option<&'static Entry> {
    STATIC_ENTRIES.get(index.checked_sub(1)?)
}

fn static_name(name: &'static str) -> Name {
    match name.strip_prefix(':') {
        Some(_) => Name::Pseudo(Pseudo::parse(name.as_bytes()).expect("a static pseudo-header")),
        None => Name::Field(HeaderName::from_static(name)),
    }
}

/// The static index of `name` (its first entry), for a field sent with an indexed name.
pub(super) fn static_index_of(name: &str) -> Option<usize> {
    Some(match name {
        "accept-charset" => 15,
        "accept-encoding" => 16,
        "accept-language" => 17,
        "accept-ranges" => 18,
        "accept" => 19,
        "access-control-allow-origin" => 20,
        "age" => 21,
        "allow" => 22,
        "authorization" => 23,
        "cache-control" => 24,
        "content-disposition" => 25,
        "content-encoding" => 26,
        "content-language" => 27,
        "content-length" => 28,
        "content-location" => 29,
        "content-range" => 30,
        "content-type" => 31,
        "cookie" => 32,
        "date" => 33,
        "etag" => 34,
        "expect" => 35,
        "expires" => 36,
        "from" => 37,
        "host" => 38,
        "if-match" => 39,
        "if-modified-since" => 40,
        "if-none-match" => 41,
        "if-range" => 42,
        "if-unmodified-since" => 43,
        "last-modified" => 44,
        "link" => 45,
        "location" => 46,
        "max-forwards" => 47,
        "proxy-authenticate" => 48,
        "proxy-authorization" => 49,
        "range" => 50,
        "referer" => 51,
        "refresh" => 52,
        "retry-after" => 53,
        "server" => 54,
        "set-cookie" => 55,
        "strict-transport-security" => 56,
        "transfer-encoding" => 57,
        "user-agent" => 58,
        "vary" => 59,
        "via" => 60,
        "www-authenticate" => 61,
        _ => return None,
    })
}

/// Each entry counts its name's and value's lengths and this (RFC 7541 §4.1).
pub(super) const ENTRY_OVERHEAD: usize = 32;

/// A connection's dynamic table, newest entry first.
#[derive(Debug)]
pub(super) struct Dynamic {
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
}

impl Dynamic {
    pub(super) fn new(max_size: usize) -> Dynamic {
        Dynamic {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// The entry `index` places from the newest (0).
    pub(super) fn get(&self, index: usize) -> Option<&Entry> {
        self.entries.get(index)
    }

    /// Adds `entry`, evicting the oldest entries to make room; one larger than the table
    /// empties it (§4.4).
    pub(super) fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        self.evict_to(self.max_size.saturating_sub(size));
        if size <= self.max_size {
            self.size += size;
            self.entries.push_front(entry);
        }
    }

    pub(super) fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, room: usize) {
        while self.size > room {
            let entry = self
                .entries
                .pop_back()
                .expect("a table with a size has entries");
            self.size -= entry.size();
        }
    }

    #[cfg(test)]
    pub(super) fn size(&self) -> usize {
        self.size
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_static_name_is_found_at_its_first_index() {
        for (at, (name, _)) in STATIC.iter().enumerate() {
            if name.starts_with(':') {
                continue;
            }
            let first = STATIC.iter().position(|(n, _)| n == name).unwrap() + 1;
            assert_eq!(static_index_of(name), Some(first), "{name}");
            assert!(static_entry(at + 1).unwrap().field().is_ok());
        }
        assert!(static_entry(0).is_none() && static_entry(62).is_none());
        assert_eq!(static_index_of("x-forwarded-for"), None);
    }

    #[test]
    fn the_oldest_entries_make_room() {
        let entry = |value: &str| Entry {
            name: Ok(Name::Field(HeaderName::from_static("a"))),
            value: Ok(HeaderValue::from_str(value).unwrap()),
            name_len: 1,
            value_len: value.len(),
        };
        let mut table = Dynamic::new(100);
        table.insert(entry("1"));
        table.insert(entry("2"));
        assert_eq!((table.len(), table.size()), (2, 68));
        table.insert(entry("3"));
        assert_eq!((table.len(), table.size()), (2, 68));
        assert_eq!(table.get(0), Some(&entry("3")));
        assert_eq!(table.get(1), Some(&entry("2")));
        // Larger than the table: it empties, and is not added.
        table.insert(entry(&"x".repeat(68)));
        assert_eq!((table.len(), table.size()), (0, 0));
        table.insert(entry("5"));
        table.set_max_size(0);
        assert_eq!((table.len(), table.size()), (0, 0));
    }
}
