//! The agent loop.
pub mod cluster;
pub mod layers;
