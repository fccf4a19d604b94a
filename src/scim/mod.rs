//! The SCIM core: pure, no I/O.
pub mod error;
pub use error::{ScimError, ScimType};
