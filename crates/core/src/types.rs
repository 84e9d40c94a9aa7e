//! Small validated value types shared by the profile list, charts and the planner:
//! DNS-1123 names, Go-style durations, layer numbers and repository-relative paths.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors of the value types in this module; the message is meant for users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("`{value}` is not a valid name: {reason}")]
    InvalidName { value: String, reason: String },
    #[error("`{value}` is not a duration: {reason} (write it like 90s, 5m or 1h30m)")]
    InvalidDuration { value: String, reason: String },
    #[error("`{value}` is not a layer: write `layer-N` or `N` with N a non-negative integer")]
    InvalidLayer { value: String },
    #[error("`{value}` is not a usable path inside the Git repository: {reason}")]
    InvalidPath { value: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Check a DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`) of at most `max` characters.
pub fn check_dns1123_label(value: &str, max: usize) -> Result<()> {
    let fail = |reason: &str| {
        Err(Error::InvalidName {
            value: value.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if value.is_empty() {
        return fail("it is empty");
    }
    if value.len() > max {
        return fail(&format!("it is longer than {max} characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return fail("use only lowercase letters, digits and '-'");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return fail("it must start and end with a letter or digit");
    }
    Ok(())
}

/// A Go-style duration (`90s`, `5m`, `1h30m`, `1.5h`, `250ms`), as helm's `--timeout` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    pub fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    pub fn as_duration(&self) -> Duration {
        self.0
    }

    /// Parse a Go duration: a sequence of decimal numbers with units ns, us, µs, ms, s, m, h.
    /// Negative durations are rejected; `0` alone is allowed.
    pub fn parse(text: &str) -> Result<Self> {
        let fail = |reason: &str| {
            Err(Error::InvalidDuration {
                value: text.to_owned(),
                reason: reason.to_owned(),
            })
        };
        let s = text.trim();
        if s.is_empty() {
            return fail("it is empty");
        }
        if s == "0" {
            return Ok(Self(Duration::ZERO));
        }
        if s.starts_with('-') {
            return fail("it is negative");
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        let mut total_nanos: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if num_len == 0 {
                return fail("expected a number");
            }
            let (num, after) = rest.split_at(num_len);
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(unit_len);
            let unit_nanos: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => return fail("a unit is missing after a number"),
                _ => return fail(&format!("unknown unit `{unit}`")),
            };
            let (int_part, frac_part) = match num.split_once('.') {
                Some((i, f)) => (i, f),
                None => (num, ""),
            };
            if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
                return fail("malformed number");
            }
            let int: u128 = if int_part.is_empty() {
                0
            } else {
                match int_part.parse() {
                    Ok(v) => v,
                    Err(_) => return fail("number too large"),
                }
            };
            let mut nanos = int.checked_mul(unit_nanos);
            if !frac_part.is_empty() {
                let digits = &frac_part[..frac_part.len().min(18)];
                let frac: u128 = digits.parse().unwrap_or(0);
                let scale = 10u128.pow(u32::try_from(digits.len()).unwrap_or(18));
                nanos = nanos.and_then(|n| n.checked_add(frac * unit_nanos / scale));
            }
            match nanos.and_then(|n| total_nanos.checked_add(n)) {
                Some(t) if t <= u128::from(u64::MAX) * 1_000_000_000 => total_nanos = t,
                _ => return fail("it is too long"),
            }
            rest = next;
        }
        let secs = u64::try_from(total_nanos / 1_000_000_000).unwrap_or(u64::MAX);
        let sub = u32::try_from(total_nanos % 1_000_000_000).unwrap_or(0);
        Ok(Self(Duration::new(secs, sub)))
    }
}

/// Go's format: `1h30m0s`, `5m0s`, `1.5s`, `250ms`, `0s`.
impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        if d < Duration::from_secs(1) {
            let n = d.subsec_nanos();
            return if n.is_multiple_of(1_000_000) {
                write!(f, "{}ms", n / 1_000_000)
            } else if n.is_multiple_of(1_000) {
                write!(f, "{}µs", n / 1_000)
            } else {
                write!(f, "{n}ns")
            };
        }
        let total = d.as_secs();
        let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        write!(f, "{s}")?;
        let nanos = d.subsec_nanos();
        if nanos > 0 {
            let frac = format!("{nanos:09}");
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("s")
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A layer number. Layers compare as numbers: `layer-2` runs before `layer-10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LayerNumber(pub u32);

impl LayerNumber {
    /// Parse `layer-N` or `N` (N a non-negative integer; surrounding spaces ignored).
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let digits = t.strip_prefix("layer-").unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidLayer {
                value: text.to_owned(),
            });
        }
        digits.parse().map(Self).map_err(|_| Error::InvalidLayer {
            value: text.to_owned(),
        })
    }
}

/// `layer-N`.
impl fmt::Display for LayerNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer-{}", self.0)
    }
}

/// Check a path inside the Git repository: relative, `/`-separated, no `..`, not empty.
/// Returns the path without `./` segments and duplicate slashes.
pub fn check_repo_path(value: &str) -> Result<String> {
    let fail = |reason: &str| {
        Err(Error::InvalidPath {
            value: value.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if value.trim().is_empty() {
        return fail("it is empty");
    }
    if value.starts_with('/') || value.starts_with('\\') || value.contains(':') {
        return fail("it must be relative to the repository root");
    }
    if value.contains('\\') || value.contains('\0') {
        return fail("use '/' as separator");
    }
    let mut parts = Vec::new();
    for seg in value.split('/') {
        match seg {
            "" | "." => {}
            ".." => return fail("`..` is not allowed"),
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return fail("it names the repository root");
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(check_dns1123_label("cert-manager", 63).is_ok());
        assert!(check_dns1123_label("a1", 63).is_ok());
        for bad in ["", "Cert", "-a", "a-", "a_b", "a.b"] {
            assert!(check_dns1123_label(bad, 63).is_err(), "{bad}");
        }
        assert!(check_dns1123_label(&"a".repeat(54), 53).is_err());
        assert!(check_dns1123_label(&"a".repeat(53), 53).is_ok());
    }

    #[test]
    fn durations_parse_like_go() {
        let p = |s| GoDuration::parse(s).unwrap().0;
        assert_eq!(p("90s"), Duration::from_secs(90));
        assert_eq!(p("5m"), Duration::from_secs(300));
        assert_eq!(p("1h30m"), Duration::from_secs(5400));
        assert_eq!(p("1.5h"), Duration::from_secs(5400));
        assert_eq!(p("250ms"), Duration::from_millis(250));
        assert_eq!(p("0"), Duration::ZERO);
        assert_eq!(p("2h45m30.5s"), Duration::from_millis(9_930_500));
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "-5m",
            "1..5s",
            "5m3",
            "99999999999999999999h",
        ] {
            assert!(GoDuration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_display_like_go() {
        let d = |s: &str| GoDuration::parse(s).unwrap().to_string();
        assert_eq!(d("90s"), "1m30s");
        assert_eq!(d("5m"), "5m0s");
        assert_eq!(d("1h30m"), "1h30m0s");
        assert_eq!(d("250ms"), "250ms");
        assert_eq!(d("1.5s"), "1.5s");
        assert_eq!(d("0s"), "0s");
        // The display form parses back to the same duration.
        for s in ["1h2m3s", "1.25s", "17ms", "3us", "48h"] {
            let once = GoDuration::parse(s).unwrap();
            assert_eq!(GoDuration::parse(&once.to_string()).unwrap(), once, "{s}");
        }
    }

    #[test]
    fn layers_compare_numerically() {
        let l = |s| LayerNumber::parse(s).unwrap();
        assert_eq!(l("layer-2"), LayerNumber(2));
        assert_eq!(l("10"), LayerNumber(10));
        assert!(l("layer-2") < l("layer-10"));
        assert_eq!(l("layer-0").to_string(), "layer-0");
        for bad in [
            "",
            "layer-",
            "layer--1",
            "-1",
            "layer-x",
            "2.5",
            "Layer-1",
            "99999999999",
        ] {
            assert!(LayerNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repo_paths() {
        assert_eq!(check_repo_path("./charts//a/").unwrap(), "charts/a");
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "c:\\x", ".", "a\\b"] {
            assert!(check_repo_path(bad).is_err(), "{bad}");
        }
    }
}
