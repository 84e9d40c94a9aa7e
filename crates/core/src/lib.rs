//! strata-core: pure logic.
