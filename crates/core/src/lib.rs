//! The pure core of scim2ldap: everything that turns text and JSON into
//! decisions without touching a socket, a file or a clock.
//!
//! - [`scim`]: RFC 7643/7644 — schemas, attribute and PATCH paths, filters,
//!   the PATCH engine, projection, list queries, discovery documents.
//! - [`mapping`]: the TOML mapping from SCIM resources to LDAP entries and
//!   back, validated with file, line and key for every problem.
//! - [`dn`]: RFC 4514 DNs and RFC 4515 filter-value escaping.
//! - [`ldif`]: RFC 2849 LDIF lines for `serve --dry-run`.
//! - [`journal`]: journal entries, what one accepted write asks of the
//!   directory.
//! - [`plan`]: what the directory should hold for a journal entry (plans,
//!   routes) and the `Planner` trait the daemon's mapping layer implements.
//! - [`ldapprep`]: RFC 4518 string preparation, so that names LDAP treats
//!   as equal are equal to the daemon's uniqueness checks.
//! - [`syntax`]: LDAP attribute syntaxes (RFC 4517), to refuse a value the
//!   directory's schema forbids before it is journaled.
//!
//! Architecture invariant: this crate depends on no tokio, hyper, ldap3 or
//! sled and does no I/O (no `std::fs`, `std::net`, `std::process`,
//! `std::env`); the daemon crate does the I/O around it. Its Cargo.toml is
//! the check: a forbidden crate cannot be imported without being added
//! there, and `tests/it/layering.rs` reads that list and the sources for
//! `std::` I/O modules.

pub mod dn;
pub mod journal;
pub mod ldapprep;
pub mod ldif;
pub mod mapping;
pub mod plan;
pub mod scim;
pub mod syntax;
