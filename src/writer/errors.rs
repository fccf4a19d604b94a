//! Why an entry could not be applied, and the one place that decides it
//! from an LDAP result: retry later (the directory is unreachable or busy)
//! or park (retrying cannot fix it). Also the names of result codes.
//!
//! Architecture invariant: knows LDAP results only, not plans, the store or
//! the dispatcher.

use ldap3::LdapError;

/// Why an entry could not be applied.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyError {
    /// The directory could not be reached (connection refused or lost, a
    /// timeout) or said it is busy or unavailable: every write waits, and
    /// the writer backs off.
    Retry(String),
    /// The directory refused this entry (any other LDAP result): the entry
    /// is tried again a few times on its own backoff, then parked, while
    /// every other resource goes on.
    Refused { code: u32, message: String },
    /// Retrying cannot fix it (a mapping error, an entry the adoption
    /// policy protects): park the entry now.
    Park { code: Option<u32>, message: String },
}

impl ApplyError {
    /// The text an administrator reads.
    pub fn message(&self) -> &str {
        match self {
            ApplyError::Retry(m)
            | ApplyError::Refused { message: m, .. }
            | ApplyError::Park { message: m, .. } => m,
        }
    }
}

/// LDAP results that say the directory, not the entry, is the problem:
/// busy (51) and unavailable (52).
const UNREACHABLE: &[u32] = &[51, 52];

pub(super) fn classify(e: LdapError) -> ApplyError {
    match e {
        LdapError::LdapResult { result } if !UNREACHABLE.contains(&result.rc) => {
            ApplyError::Refused {
                code: result.rc,
                message: format!(
                    "{} ({}){}",
                    rc_name(result.rc),
                    result.rc,
                    if result.text.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", result.text)
                    }
                ),
            }
        }
        other => ApplyError::Retry(other.to_string()),
    }
}

/// The Permissive Modify control (OID 1.2.840.113556.1.4.1413, supported
/// by OpenLDAP, 389 DS and Active Directory), not critical: adding a value
/// that is there already, or deleting one that is gone, succeeds instead
/// of failing the whole modify with attributeOrValueExists (20) or
/// noSuchAttribute (16). Member writes race with the directory's own
/// referential integrity and with administrators; with this, they are
/// idempotent. A server that does not know the control ignores it, and the
/// writer's fallbacks (converge to the whole list) remain.
pub(super) fn permissive_modify() -> Vec<ldap3::controls::RawControl> {
    vec![ldap3::controls::RawControl {
        ctype: "1.2.840.113556.1.4.1413".to_string(),
        crit: false,
        val: None,
    }]
}

/// Names of the LDAP result codes an administrator is likely to see.
pub fn rc_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        11 => "adminLimitExceeded",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        80 => "other",
        _ => "ldapError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_separates_retryable_from_permanent() {
        let res = |rc| LdapError::LdapResult {
            result: ldap3::LdapResult {
                rc,
                matched: String::new(),
                text: "x".into(),
                refs: vec![],
                ctrls: vec![],
            },
        };
        assert!(matches!(classify(res(51)), ApplyError::Retry(_)));
        assert!(matches!(classify(res(52)), ApplyError::Retry(_)));
        // "other" (80) is what slapd answers for an RDN too long for its
        // database: this entry's problem, not the directory's.
        for rc in [65, 80, 3, 11, 16, 21] {
            assert!(
                matches!(classify(res(rc)), ApplyError::Refused { code, .. } if code == rc),
                "{rc}"
            );
        }
        assert!(matches!(
            classify(LdapError::EndOfStream),
            ApplyError::Retry(_)
        ));
    }
}
