//! The SCIM core: pure, no I/O.
pub mod error;
pub mod filter;
pub mod json;
pub mod members;
pub mod patch;
pub mod path;
pub mod schema;
pub use error::{ScimError, ScimType};
