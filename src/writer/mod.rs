//! The LDAP writer: takes journal entries in order and converges the
//! directory to the state each one carries.
//!
//! For every entry a [`Planner`] (the mapping) says where it goes (a cheap
//! [`Route`], when it is dispatched) and what the directory should hold (a
//! [`Plan`], in the lane that applies it); the [`Directory`] client reads
//! what the directory holds and sends the minimal add / modrdn / modify /
//! delete. Because it converges to a state instead of replaying a delta,
//! applying an entry twice leaves the directory as applying it once.
//!
//! - `plan` (from the core): plan and route types, the `Planner` trait.
//! - `errors`: retry or park, from an LDAP result; result-code names.
//! - `directory`: the client: connect, find, converge one entry.
//! - `diff`: attribute diff and value normalisation.
//! - `members`: group member deltas, full lists, memberships.
//! - `dispatch`: the writer's dispatcher and its handle.
//! - `lane`: the lane tasks, one connection each.
//! - `backoff`: exponential backoff with jitter.
//!
//! Architecture invariant: the writer knows LDAP and the journal, never
//! SCIM JSON or the mapping file; only attributes named in a [`Desired`]
//! are ever modified.

mod backoff;
mod diff;
mod directory;
mod dispatch;
mod errors;
mod lane;
mod members;
// The plan types are pure and live in the core; `super::plan` in the
// files below names them.
use crate::plan;

pub use backoff::Backoff;
pub use diff::{diff, same_dn, split_rdn, user_account_control};
pub use directory::Directory;
pub use dispatch::{Writer, WriterHandle};
pub use errors::{rc_name, ApplyError};
pub use plan::{
    Claim, Desired, FullMembers, GroupPlan, MemberAttrPlan, MemberPlan, Membership, Plan,
    PlanError, Planner, Route,
};

/// Refuses a mapping that writes AD's `unicodePwd` over a connection that
/// is not encrypted: Active Directory accepts a password only over LDAPS
/// or StartTLS, and would refuse every one of them at write time (a dry
/// run sends nothing and is let through).
pub fn check_password_transport(
    mapping: &crate::mapping::Mapping,
    ldap: &crate::config::LdapConfig,
) -> Result<(), String> {
    let Some(p) = &mapping.password else {
        return Ok(());
    };
    let encrypted = ldap.url.to_ascii_lowercase().starts_with("ldaps://") || ldap.starttls;
    if p.format == crate::mapping::PasswordFormat::AdUnicodePwd && !encrypted && !ldap.dry_run {
        return Err(format!(
            "the mapping writes the password to {} (format = \"ad_unicode_pwd\"), which Active \
             Directory accepts only over an encrypted connection, but ldap.url is {:?}: use \
             ldaps:// (or starttls = true)",
            p.attribute, ldap.url
        ));
    }
    Ok(())
}
