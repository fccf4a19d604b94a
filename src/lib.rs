//! scim2ldap: a SCIM 2.0 server that provisions users and groups from an
//! identity provider into an LDAP directory. See ARCHITECTURE.md.

pub mod config;
pub mod scim;
pub mod store;
pub mod token;
pub mod ldap;
