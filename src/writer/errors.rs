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
    /// The directory could not be reached or was busy: retry later.
    Retry(String),
    /// Retrying cannot fix it (schema violation, access, bad mapping):
    /// park the entry.
    Park { code: Option<u32>, message: String },
}

/// LDAP result codes worth retrying: busy, unavailable, and limits that a
/// later attempt may not hit.
const RETRYABLE: &[u32] = &[3, 11, 51, 52, 80];

pub(super) fn classify(e: LdapError) -> ApplyError {
    match e {
        LdapError::LdapResult { result } if !RETRYABLE.contains(&result.rc) => ApplyError::Park {
            code: Some(result.rc),
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
        },
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
        assert!(matches!(
            classify(res(65)),
            ApplyError::Park { code: Some(65), .. }
        ));
    }
}
