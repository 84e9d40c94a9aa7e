//! strata: layered Helm profiles from Git.
