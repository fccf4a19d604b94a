//! scim2ldap: a SCIM 2.0 server that provisions users and groups from an
//! identity provider into an LDAP directory. See ARCHITECTURE.md for the
//! map of modules and what each must not know.

pub mod admin;
pub mod adopt;
pub mod api;
pub mod check;
pub mod config;
pub mod daemon;
pub mod http;
pub mod journal_cmd;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod offload;
pub mod ops;
pub mod status;
pub mod store;
pub mod tls;
pub mod token;
pub mod writer;

// The pure core, re-exported so that `crate::scim::...` and
// `scim2ldap::mapping::...` name the same modules everywhere.
pub use scim2ldap_core::{dn, journal, ldapprep, ldif, mapping, plan, scim, syntax};
