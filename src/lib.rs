//! strata: layered Helm profiles from Git.
pub mod process;
