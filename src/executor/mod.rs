//! The one door to helm: the helm process ([`helm`], run through [`process`]) and helm's
//! release storage ([`releases`]).
pub mod helm;
pub mod process;
pub mod releases;
