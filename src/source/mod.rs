//! Where a revision comes from: the Git repository, chart repositories, and the loader that
//! turns one commit into a checked revision (or every problem it has).
pub mod auth;
pub mod charts;
pub mod cluster_name;
pub mod deps;
pub mod disk;
pub mod git;
pub mod hooks;
pub mod oci;
pub mod revision;
pub mod tree;
