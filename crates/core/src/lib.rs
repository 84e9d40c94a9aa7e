//! strata-core: pure logic (no I/O).
pub mod problem;
pub mod profiles;
pub mod types;
pub mod version;
pub mod yaml;

pub use problem::{Problem, Problems};
