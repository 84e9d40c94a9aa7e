//! testkit: real servers for tests.
