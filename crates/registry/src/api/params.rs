//! Query parameters as Consul reads them: presence-based flags (`?stale`, `?passing`),
//! repeated keys (`tag=a&tag=b`), Go durations for `wait`.

use std::time::Duration;

use wharf_model::parse_go_duration;

use super::ApiError;

/// Default and longest hold of a blocking query, as Consul's.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// The decoded query string of one request.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        Params { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// `?passing`: present and empty means true, otherwise Go's `ParseBool`.
    pub fn passing(&self) -> Result<bool, ApiError> {
        match self.get("passing") {
            None => Ok(false),
            Some(value) => parse_go_bool(value)
                .ok_or_else(|| ApiError::bad_request("Invalid value for ?passing")),
        }
    }

    /// `node-meta=key:value` filters, all of which must hold.
    pub fn node_meta(&self) -> Result<Vec<(String, String)>, ApiError> {
        self.all("node-meta")
            .map(|pair| match pair.split_once(':') {
                Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
                None => Ok((pair.to_owned(), String::new())),
            })
            .collect()
    }

    /// Checks what every read accepts: consistency flags, datacenter, and `filter`, which
    /// Wharf refuses rather than silently ignores.
    pub fn check_common(&self, datacenter: &str) -> Result<(), ApiError> {
        if self.has("stale") && self.has("consistent") {
            return Err(ApiError::bad_request(
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ));
        }
        if let Some(dc) = self.get("dc").filter(|dc| !dc.is_empty())
            && dc != datacenter
        {
            return Err(ApiError::internal(format!("No path to datacenter {dc:?}")));
        }
        if self.get("filter").is_some_and(|f| !f.is_empty()) {
            return Err(ApiError::bad_request(
                "Wharf does not support ?filter on this endpoint yet (it does on the catalog, health, agent, members and intentions listings)",
            ));
        }
        Ok(())
    }

    /// The blocking parameters: the index to wait past (if any) and how long to hold.
    pub fn blocking(&self) -> Result<Option<(u64, Duration)>, ApiError> {
        let index = match self.get("index") {
            None | Some("") => return Ok(None),
            Some(text) => text
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request("Invalid index"))?,
        };
        let wait = match self.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(text) => {
                parse_go_duration(text).map_err(|_| ApiError::bad_request("Invalid wait time"))?
            }
        };
        let wait = if wait.is_zero() {
            DEFAULT_WAIT
        } else {
            wait.min(MAX_WAIT)
        };
        Ok((index > 0).then_some((index, wait)))
    }
}

/// Go's `strconv.ParseBool`, with the empty string meaning true (a bare `?passing`).
pub(super) fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_presence_based_and_tags_repeat() {
        let params = Params::parse(Some("stale=&tag=a&tag=b&passing"));
        assert!(params.has("stale"));
        assert_eq!(params.all("tag").collect::<Vec<_>>(), ["a", "b"]);
        assert!(params.passing().unwrap());
        assert!(!Params::parse(Some("passing=0")).passing().unwrap());
        assert!(Params::parse(Some("passing=maybe")).passing().is_err());
    }

    #[test]
    fn blocking_parameters() {
        assert_eq!(Params::parse(None).blocking().unwrap(), None);
        assert_eq!(Params::parse(Some("index=0")).blocking().unwrap(), None);
        assert_eq!(
            Params::parse(Some("index=7&wait=120000ms"))
                .blocking()
                .unwrap(),
            Some((7, Duration::from_secs(120)))
        );
        assert_eq!(
            Params::parse(Some("index=7")).blocking().unwrap(),
            Some((7, DEFAULT_WAIT))
        );
        assert_eq!(
            Params::parse(Some("index=7&wait=1h")).blocking().unwrap(),
            Some((7, MAX_WAIT))
        );
        assert!(Params::parse(Some("index=x")).blocking().is_err());
        assert!(Params::parse(Some("index=3&wait=soon")).blocking().is_err());
    }

    #[test]
    fn stale_and_consistent_conflict() {
        assert!(
            Params::parse(Some("stale&consistent"))
                .check_common("dc1")
                .is_err()
        );
        assert!(Params::parse(Some("dc=dc1")).check_common("dc1").is_ok());
        assert!(Params::parse(Some("dc=dc9")).check_common("dc1").is_err());
    }
}
