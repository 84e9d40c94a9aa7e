//! Chart versions and version constraints with helm's syntax (Masterminds/semver v3).
//!
//! Accepted, as helm users write them:
//! - exact: `1.2.3`, `=1.2.3`, `v1.2.3` (a leading `v` is ignored everywhere);
//! - comparisons: `>1.2`, `>=1.2.3`, `<2`, `<=1.4`, `!=1.3.0` (`=>`/`=<` too);
//! - wildcards: `1.2.x`, `1.2.*`, `1.x`, `*`, and partial versions `1.2` (= `1.2.x`);
//! - tilde `~1.2.3` (>=1.2.3 <1.3.0), `~1` (>=1 <2), `~>` as an alias;
//! - caret `^1.2.3` (>=1.2.3 <2), `^0.2.3` (>=0.2.3 <0.3.0), `^0.0.3` (=0.0.3);
//! - hyphen ranges `1.2 - 1.4.5` (>=1.2.0 <=1.4.5);
//! - AND: comparators separated by spaces or commas (`>=1.2 <2`, `>=1.2, <2`);
//!   OR: `||` between AND groups.
//!
//! Pre-releases follow helm: a pre-release version (`1.3.0-rc.1`) can only satisfy an AND
//! group (the part between `||`) in which some comparator names a pre-release (`>=1.3.0-0`,
//! `~1.3.0-rc.0`, `>=1.3.0-0 <1.3.0`); otherwise pre-releases never match. Build metadata is
//! ignored when comparing.
//!
//! The evaluation is written here on top of `semver::Version` rather than mapped onto
//! `semver::VersionReq`, whose meaning differs (a bare `1.2.3` is a caret range there, an exact
//! version in helm; it has no `!=` and no `||`). It follows helm's library also where that is
//! surprising (`~0.0.0` accepts everything, `^x` only `0.0.0`, `<=x` means `<0.1.0`).
//! `tests/helm_versions.rs` resolves a table of constraints (and, with
//! `STRATA_HELM_VERSION_FUZZ=N`, random ones) with real helm 4 and helm 3 and compares.

use std::cmp::Ordering;
use std::fmt;

use semver::{BuildMetadata, Prerelease, Version};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a version or constraint did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("`{value}` is not a semantic version: {reason}")]
    InvalidVersion { value: String, reason: String },
    #[error("`{value}` is not a version constraint: {reason}")]
    InvalidConstraint { value: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parse a chart version like helm does: a leading `v` is allowed, `1` / `1.2` are read
/// as `1.0.0` / `1.2.0`, and leading zeros are ignored (`01.2.3` is `1.2.3`).
pub fn parse_version(text: &str) -> Result<Version> {
    let t = text.trim();
    let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
    if let Ok(v) = Version::parse(t) {
        return Ok(v);
    }
    if t.split(['-', '+'])
        .next()
        .is_some_and(|core| core.split('.').any(|p| matches!(p, "x" | "X" | "*")))
    {
        return Err(Error::InvalidVersion {
            value: text.to_owned(),
            reason: "wildcards are not allowed in a version".into(),
        });
    }
    let partial = parse_partial(t).map_err(|reason| Error::InvalidVersion {
        value: text.to_owned(),
        reason,
    })?;
    match partial {
        Partial {
            major: Some(major),
            minor,
            patch,
            pre,
        } => Ok(Version {
            major,
            minor: minor.unwrap_or(0),
            patch: patch.unwrap_or(0),
            pre,
            build: BuildMetadata::EMPTY,
        }),
        _ => Err(Error::InvalidVersion {
            value: text.to_owned(),
            reason: "wildcards are not allowed in a version".into(),
        }),
    }
}

/// A version with possibly missing (wildcard) parts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Partial {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: Prerelease,
}

fn parse_partial(t: &str) -> std::result::Result<Partial, String> {
    let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
    if t.is_empty() {
        return Err("the version is empty".into());
    }
    // Build metadata is ignored.
    let t = t.split_once('+').map_or(t, |(a, _)| a);
    let (core, pre) = match t.split_once('-') {
        Some((c, p)) => (
            c,
            Prerelease::new(p).map_err(|e| format!("bad pre-release `{p}`: {e}"))?,
        ),
        None => (t, Prerelease::EMPTY),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 {
        return Err("more than three numeric parts".into());
    }
    let mut nums: [Option<u64>; 3] = [None; 3];
    let mut wild = false;
    for (i, p) in parts.iter().enumerate() {
        if matches!(*p, "x" | "X" | "*") {
            wild = true;
            continue;
        }
        if wild {
            // Like helm, parts after a wildcard are ignored (`1.x.3` is `1.x`).
            if !p.bytes().all(|b| b.is_ascii_digit()) || p.is_empty() {
                return Err(format!("`{p}` is not a number"));
            }
            continue;
        }
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{p}` is not a number"));
        }
        nums[i] = Some(p.parse().map_err(|_| format!("`{p}` is too large"))?);
    }
    Ok(Partial {
        major: nums[0],
        minor: nums[1],
        patch: nums[2],
        pre,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Tilde,
    Caret,
}

/// One comparison, in the form helm's semver library evaluates it: the version with missing
/// parts filled with zeros (`con`), and which part was a wildcard or missing. A wildcard major
/// (`x`, `*`) is `0.0.0` with only `dirty` set, which gives helm's (surprising) answers for
/// `>x`, `<=x` or `^x`; `tests/helm_versions.rs` checks these against real helm.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    op: Op,
    con: Version,
    dirty: bool,
    minor_dirty: bool,
    patch_dirty: bool,
}

fn cmp(a: &Version, b: &Version) -> Ordering {
    a.cmp_precedence(b)
}

impl Comparator {
    fn new(op: Op, p: &Partial) -> Self {
        let (major, minor, patch, dirty, minor_dirty, patch_dirty) =
            match (p.major, p.minor, p.patch) {
                (None, _, _) => (0, 0, 0, true, false, false),
                (Some(ma), None, _) => (ma, 0, 0, true, true, false),
                (Some(ma), Some(mi), None) => (ma, mi, 0, true, false, true),
                (Some(ma), Some(mi), Some(pa)) => (ma, mi, pa, false, false, false),
            };
        Self {
            op,
            con: Version {
                major,
                minor,
                patch,
                pre: p.pre.clone(),
                build: BuildMetadata::EMPTY,
            },
            dirty,
            minor_dirty,
            patch_dirty,
        }
    }

    /// `~`: at least `con`, same major, and same minor unless the minor was a wildcard;
    /// `~0.0.0` (all parts written or a bare wildcard) accepts everything.
    fn tilde(&self, v: &Version) -> bool {
        let c = &self.con;
        if cmp(v, c) == Ordering::Less {
            return false;
        }
        if (c.major, c.minor, c.patch) == (0, 0, 0) && !self.minor_dirty && !self.patch_dirty {
            return true;
        }
        v.major == c.major && (self.minor_dirty || v.minor == c.minor)
    }

    /// `^`: at least `con`, and the leftmost non-zero (or wildcard) part stays the same.
    fn caret(&self, v: &Version) -> bool {
        let c = &self.con;
        if cmp(v, c) == Ordering::Less {
            return false;
        }
        if c.major > 0 || self.minor_dirty {
            return v.major == c.major;
        }
        if v.major > 0 {
            return false;
        }
        if c.minor > 0 || self.patch_dirty {
            return v.minor == c.minor;
        }
        v.minor == 0 && v.patch == c.patch
    }

    /// Does `v` satisfy this comparator? (Pre-release eligibility is decided per AND group,
    /// see [`VersionConstraint::matches`].)
    fn matches(&self, v: &Version) -> bool {
        let c = &self.con;
        let order = cmp(v, c);
        match self.op {
            Op::Eq => {
                if self.dirty {
                    self.tilde(v)
                } else {
                    order == Ordering::Equal
                }
            }
            Op::Ne => {
                if self.dirty {
                    if v.major != c.major {
                        return true;
                    }
                    if self.minor_dirty {
                        return false;
                    }
                    if v.minor != c.minor {
                        return true;
                    }
                    if self.patch_dirty {
                        return (!v.pre.is_empty() || !c.pre.is_empty()) && v.pre != c.pre;
                    }
                    if v.patch != c.patch {
                        return true;
                    }
                }
                order != Ordering::Equal
            }
            Op::Gt => {
                if self.dirty {
                    if v.major != c.major {
                        return v.major > c.major;
                    }
                    if self.minor_dirty {
                        return false;
                    }
                    if self.patch_dirty {
                        return v.minor > c.minor;
                    }
                }
                order == Ordering::Greater
            }
            Op::Lt => order == Ordering::Less,
            Op::Ge => order != Ordering::Less,
            Op::Le => {
                if !self.dirty {
                    return order != Ordering::Greater;
                }
                if v.major != c.major {
                    return v.major < c.major;
                }
                self.minor_dirty || v.minor <= c.minor
            }
            Op::Tilde => self.tilde(v),
            Op::Caret => self.caret(v),
        }
    }
}

/// A version constraint in helm's syntax; see the module documentation.
/// Serializes as the text it was written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionConstraint {
    text: String,
    /// OR of AND groups.
    groups: Vec<Vec<Comparator>>,
}

impl VersionConstraint {
    pub fn parse(text: &str) -> Result<Self> {
        let fail = |reason: String| Error::InvalidConstraint {
            value: text.to_owned(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(fail("it is empty".into()));
        }
        let mut groups = Vec::new();
        for group in text.split("||") {
            let tokens = tokenize(group);
            if tokens.is_empty() {
                return Err(fail("an empty alternative around `||`".into()));
            }
            let mut comps = Vec::new();
            let mut i = 0;
            while i < tokens.len() {
                // Hyphen range: `A - B`.
                if i + 2 < tokens.len() && tokens[i + 1] == "-" {
                    let lo = parse_partial(&tokens[i]).map_err(&fail)?;
                    let hi = parse_partial(&tokens[i + 2]).map_err(&fail)?;
                    comps.push(Comparator::new(Op::Ge, &lo));
                    comps.push(Comparator::new(Op::Le, &hi));
                    i += 3;
                    continue;
                }
                comps.push(parse_comparator(&tokens[i]).map_err(&fail)?);
                i += 1;
            }
            groups.push(comps);
        }
        Ok(Self {
            text: text.trim().to_owned(),
            groups,
        })
    }

    /// Does `v` satisfy the constraint?
    pub fn matches(&self, v: &Version) -> bool {
        self.groups.iter().any(|g| {
            let prerelease_ok = g.iter().any(|c| !c.con.pre.is_empty());
            (v.pre.is_empty() || prerelease_ok) && g.iter().all(|c| c.matches(v))
        })
    }
    /// Parse `version` leniently (leading `v`, partial) and test it; unparsable versions never
    /// match.
    pub fn matches_str(&self, version: &str) -> bool {
        parse_version(version).is_ok_and(|v| self.matches(&v))
    }

    /// The version when the constraint names exactly one (`1.2.3`, `=v1.2.3`).
    pub fn exact(&self) -> Option<Version> {
        match self.groups.as_slice() {
            [g] => match g.as_slice() {
                [c] if c.op == Op::Eq && !c.dirty => Some(c.con.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// Does any comparator name a pre-release (so pre-release versions may match)?
    pub fn names_prerelease(&self) -> bool {
        self.groups.iter().flatten().any(|c| !c.con.pre.is_empty())
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Split an AND group on spaces and commas, gluing operators to the version after them
/// (`>= 1.2` is one comparator) and keeping a lone `-` for hyphen ranges.
fn tokenize(group: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut pending_op = String::new();
    for raw in group.split([' ', ',', '\t']).filter(|s| !s.is_empty()) {
        if raw.chars().all(|c| "<>=!~^".contains(c)) {
            pending_op.push_str(raw);
            continue;
        }
        if pending_op.is_empty() {
            out.push(raw.to_owned());
        } else {
            out.push(format!("{pending_op}{raw}"));
            pending_op.clear();
        }
    }
    if !pending_op.is_empty() {
        out.push(pending_op);
    }
    out
}

fn parse_comparator(tok: &str) -> std::result::Result<Comparator, String> {
    let ops = [
        (">=", Op::Ge),
        ("=>", Op::Ge),
        ("<=", Op::Le),
        ("=<", Op::Le),
        ("!=", Op::Ne),
        ("~>", Op::Tilde),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("=", Op::Eq),
        ("~", Op::Tilde),
        ("^", Op::Caret),
    ];
    let (op, rest) = ops
        .iter()
        .find_map(|(p, op)| tok.strip_prefix(p).map(|r| (*op, r)))
        .unwrap_or((Op::Eq, tok));
    if rest.is_empty() {
        return Err(format!("operator `{tok}` has no version after it"));
    }
    let v = parse_partial(rest)?;
    Ok(Comparator::new(op, &v))
}

impl fmt::Display for VersionConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for VersionConstraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for VersionConstraint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        VersionConstraint::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yes(c: &str, vs: &[&str]) {
        let c = VersionConstraint::parse(c).unwrap();
        for v in vs {
            assert!(c.matches_str(v), "{c} should match {v}");
        }
    }
    fn no(c: &str, vs: &[&str]) {
        let c = VersionConstraint::parse(c).unwrap();
        for v in vs {
            assert!(!c.matches_str(v), "{c} should not match {v}");
        }
    }

    #[test]
    fn versions_parse_leniently() {
        assert_eq!(parse_version("v1.14.4").unwrap(), Version::new(1, 14, 4));
        assert_eq!(parse_version("1.2").unwrap(), Version::new(1, 2, 0));
        assert_eq!(parse_version("2").unwrap(), Version::new(2, 0, 0));
        assert!(parse_version("1.2.x").is_err());
        assert!(parse_version("banana").is_err());
        // Helm (Masterminds' lenient parser) accepts leading zeros in chart versions.
        assert_eq!(parse_version("01.2.03").unwrap(), Version::new(1, 2, 3));
    }

    #[test]
    fn bare_version_is_exact_not_caret() {
        yes("1.2.3", &["1.2.3", "v1.2.3", "1.2.3+build.5"]);
        no("1.2.3", &["1.2.4", "1.3.0", "1.2.3-rc.1"]);
        yes("=v1.2.3", &["1.2.3"]);
        assert_eq!(
            VersionConstraint::parse("v1.2.3").unwrap().exact(),
            Some(Version::new(1, 2, 3))
        );
        assert_eq!(VersionConstraint::parse("1.2.x").unwrap().exact(), None);
        assert_eq!(VersionConstraint::parse(">=1.2.3").unwrap().exact(), None);
    }

    #[test]
    fn wildcards_and_partials() {
        yes("1.14.x", &["1.14.0", "1.14.9"]);
        no("1.14.x", &["1.13.9", "1.15.0", "1.14.1-rc.1"]);
        yes("1.2", &["1.2.0", "1.2.7"]);
        no("1.2", &["1.3.0"]);
        yes("1.*", &["1.0.0", "1.99.0"]);
        no("1.*", &["2.0.0", "0.9.0"]);
        yes("*", &["0.0.1", "9.9.9"]);
        yes("1.x.3", &["1.0.0", "1.9.9"]);
        no("*", &["1.0.0-alpha"]);
    }

    #[test]
    fn comparisons() {
        yes(">=1.2, <2", &["1.2.0", "1.9.9"]);
        no(">=1.2, <2", &["1.1.9", "2.0.0", "2.0.0-rc.1"]);
        yes(">=1.2 <2", &["1.5.0"]);
        yes(">= 1.2 , < 2", &["1.5.0"]);
        yes(">1.2.3", &["1.2.4"]);
        no(">1.2.3", &["1.2.3"]);
        // `>1.2` means above the whole 1.2.x range; `<=1.2` includes it.
        no(">1.2", &["1.2.5"]);
        yes(">1.2", &["1.3.0"]);
        yes("<=1.2", &["1.2.9"]);
        no("<=1.2", &["1.3.0"]);
        yes("<1.2", &["1.1.9"]);
        no("<1.2", &["1.2.0"]);
        yes("!=1.3.0", &["1.2.0", "1.4.0"]);
        no("!=1.3.0", &["1.3.0"]);
        yes("=>1.0 =<1.1", &["1.1.5"]);
    }

    #[test]
    fn tilde_and_caret() {
        yes("~1.2.3", &["1.2.3", "1.2.9"]);
        no("~1.2.3", &["1.2.2", "1.3.0"]);
        yes("~1", &["1.0.0", "1.9.0"]);
        no("~1", &["2.0.0"]);
        yes("~>1.2", &["1.2.0", "1.2.5"]);
        yes("^1.2.3", &["1.2.3", "1.9.0"]);
        no("^1.2.3", &["2.0.0", "1.2.2"]);
        yes("^0.2.3", &["0.2.3", "0.2.9"]);
        no("^0.2.3", &["0.3.0"]);
        yes("^0.0.3", &["0.0.3"]);
        no("^0.0.3", &["0.0.4"]);
        yes("^0", &["0.9.9"]);
        no("^0", &["1.0.0"]);
        yes("^1.x", &["1.5.0"]);
    }

    #[test]
    fn hyphen_ranges_and_or() {
        yes("1.2 - 1.4.5", &["1.2.0", "1.4.5"]);
        no("1.2 - 1.4.5", &["1.4.6", "1.1.0"]);
        yes("1.2 - 1.4", &["1.4.9"]);
        yes("~1.2 || ^3", &["1.2.5", "3.1.0"]);
        no("~1.2 || ^3", &["2.0.0"]);
    }

    #[test]
    fn prereleases_only_when_named() {
        yes(">=1.3.0-0", &["1.3.0-rc.1", "1.4.0", "1.4.0-beta"]);
        yes("~1.3.0-rc.0", &["1.3.0-rc.1", "1.3.5"]);
        no("~1.3.0-rc.0", &["1.4.0-rc.1"]);
        // The pre-release in one comparator admits pre-releases for its whole AND group,
        // not for other `||` alternatives.
        yes(">=1.3.0-0, <1.3.0", &["1.3.0-rc.1"]);
        yes(">1.2.9 <1.3.0-rc.5", &["1.3.0-rc.1"]);
        no("<1.3.0 || >=9.0.0-0", &["1.3.0-rc.1"]);
        no(">=1.0", &["1.3.0-rc.1"]);
        assert!(
            VersionConstraint::parse(">=1.3.0-0")
                .unwrap()
                .names_prerelease()
        );
        assert!(!VersionConstraint::parse("1.x").unwrap().names_prerelease());
    }

    #[test]
    fn bad_constraints() {
        for bad in [
            "",
            "||",
            "1.2 ||",
            ">=",
            "banana",
            "1.x.y",
            "1.2.3.4",
            "1.2-rc..1",
            "~ ",
        ] {
            assert!(VersionConstraint::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serializes_as_text() {
        let c = VersionConstraint::parse(">=1.2, <2").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\">=1.2, <2\"");
        let back: VersionConstraint = serde_json::from_str("\">=1.2, <2\"").unwrap();
        assert_eq!(back, c);
    }
}
