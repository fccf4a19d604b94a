//! The SCIM core: pure, no I/O.
pub mod attr_path;
pub mod datetime;
pub mod discovery;
pub mod error;
pub mod eval;
pub mod filter;
pub mod json;
pub mod kind;
pub mod members;
pub mod meta;
pub mod patch;
pub mod path;
pub mod project;
pub mod query;
pub mod schema;
pub use error::{ScimError, ScimType};
pub use kind::Kind;
