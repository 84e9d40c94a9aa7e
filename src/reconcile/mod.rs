//! The glue around strata-core's pure decisions: a revision's layers one after the other
//! ([`layers`]), one release's attempt loop ([`release`]) and the retry book ([`retry`]).
pub mod layers;
pub mod release;
pub mod retry;
