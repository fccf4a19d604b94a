//! Who talked to the daemon last: the time of the last authenticated
//! request per bearer token (the token's name says which identity
//! provider). The edge calls [`Activity::request_from`] once per
//! authenticated request; the status command, the status page and the
//! `scim2ldap_token_last_request_timestamp_seconds` gauge read it.
//!
//! Bounded: a name enters only after its token authenticated, so there are
//! at most as many entries as tokens ever configured while the daemon ran.
//!
//! Architecture invariant: std only (the edge names this type and must
//! not learn anything else through it).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

/// Last request per token name, and when the daemon started.
#[derive(Debug)]
pub struct Activity {
    started: SystemTime,
    /// Token name → time of its last request (`None`: none since start).
    tokens: Mutex<BTreeMap<String, Option<SystemTime>>>,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity::new(std::iter::empty::<String>())
    }
}

impl Activity {
    /// Starts now, knowing the configured token names (so that a token no
    /// request came with yet is listed as such).
    pub fn new(token_names: impl IntoIterator<Item = impl Into<String>>) -> Activity {
        Activity {
            started: SystemTime::now(),
            tokens: Mutex::new(token_names.into_iter().map(|n| (n.into(), None)).collect()),
        }
    }

    /// Records an authenticated request made with the token `name`.
    pub fn request_from(&self, name: &str) {
        self.request_at(name, SystemTime::now());
    }

    /// [`Activity::request_from`] at a given time (tests).
    pub fn request_at(&self, name: &str, at: SystemTime) {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match t.get_mut(name) {
            Some(last) => *last = Some(at),
            None => {
                t.insert(name.to_string(), Some(at));
            }
        }
    }

    /// Adds token names (after a reload) without forgetting any.
    pub fn know_tokens(&self, names: impl IntoIterator<Item = impl Into<String>>) {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        for n in names {
            t.entry(n.into()).or_insert(None);
        }
    }

    /// Every token name with the time of its last request, by name.
    pub fn tokens(&self) -> Vec<(String, Option<SystemTime>)> {
        let t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// When the daemon started.
    pub fn started(&self) -> SystemTime {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_request_per_token() {
        let a = Activity::new(["entra", "okta"]);
        let t1 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
        let t2 = t1 + std::time::Duration::from_secs(60);
        a.request_at("entra", t1);
        a.request_at("entra", t2);
        assert_eq!(
            a.tokens(),
            vec![("entra".to_string(), Some(t2)), ("okta".to_string(), None)]
        );
        a.know_tokens(["okta", "script"]);
        assert_eq!(a.tokens().len(), 3);
    }
}
