//! Size limits of the cluster, checked early so a too-large profile fails with a clear message
//! instead of a cryptic one from the API server.
//!
//! helm keeps every revision of a release in a Secret (`sh.helm.release.v1.<name>.v<N>`) whose
//! `data.release` is `base64(gzip(release JSON))`. The release JSON holds the whole chart (every
//! template and file, themselves base64), the chart's default values, the user's values, the
//! rendered manifest and the hooks. Kubernetes refuses a Secret whose data is over 1 MiB
//! (`Too long: must have at most 1048576 bytes`), and etcd refuses any request over about
//! 1.5 MiB (`etcdserver: request is too large`).
//!
//! - [`check_values`]: merged values over [`MAX_VALUES_BYTES`] as JSON.
//! - [`estimate_stored_size`] / [`check_release`]: the size helm will store, computed the way
//!   helm computes it (gzip at best compression, then base64) over a document shaped like
//!   helm's release; checked against [`MAX_RELEASE_SECRET_BYTES`].
//!
//! Messages carry sizes and names only, never values.

use std::io::Write;

use serde_json::{Value, json};

/// Largest merged values accepted, as compact JSON (1 MiB).
pub const MAX_VALUES_BYTES: usize = 1024 * 1024;
/// Kubernetes' limit on the data of one Secret (1 MiB): helm's stored release must fit.
pub const MAX_RELEASE_SECRET_BYTES: usize = 1024 * 1024;
/// etcd's default limit on one request (1.5 MiB), for reference in messages.
pub const ETCD_REQUEST_LIMIT_BYTES: usize = 1024 * 1024 * 3 / 2;

/// A size limit that a profile exceeds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The merged values are too large.
    #[error(
        "profile `{profile}`: the merged values are {} as JSON, over the limit of {}: helm stores them in the release Secret, which Kubernetes limits to 1 MiB. Move large data (certificates, dashboards, files) out of the values, into ConfigMaps or the chart's own files, or split the profile",
        human(*size), human(*limit)
    )]
    ValuesTooLarge {
        profile: String,
        size: usize,
        limit: usize,
    },
    /// helm's stored release would be too large.
    #[error(
        "profile `{profile}`: helm would store release `{release}` in a Secret of about {} (base64 of the gzipped chart, values and rendered manifest), over the {} Kubernetes accepts (the API server would answer \"Too long: must have at most 1048576 bytes\" or \"etcdserver: request is too large\"). Make the chart smaller (large CRDs, files under files/, generated templates), move data out of the values, or split the chart into several profiles",
        human(*size), human(*limit)
    )]
    ReleaseTooLarge {
        profile: String,
        release: String,
        size: usize,
        limit: usize,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `1.25 MiB (1310720 bytes)`, `12.0 KiB (12288 bytes)`, `900 bytes`.
pub fn human(bytes: usize) -> String {
    // Precision is irrelevant for a display of sizes far below 2^52.
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    if bytes >= 1024 * 1024 {
        format!("{:.2} MiB ({bytes} bytes)", b / (1024.0 * 1024.0))
    } else if bytes >= 1024 {
        format!("{:.1} KiB ({bytes} bytes)", b / 1024.0)
    } else {
        format!("{bytes} bytes")
    }
}

/// The size of `values` serialised as compact JSON.
pub fn values_size(values: &Value) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and serde_json cannot fail on a `Value`.
    let _ = serde_json::to_writer(&mut counter, values);
    counter.0
}

/// Fails when the merged values of `profile` are over [`MAX_VALUES_BYTES`] as JSON; returns
/// their size otherwise.
pub fn check_values(profile: &str, values: &Value) -> Result<usize> {
    check_values_with_limit(profile, values, MAX_VALUES_BYTES)
}

/// [`check_values`] with another limit.
pub fn check_values_with_limit(profile: &str, values: &Value, limit: usize) -> Result<usize> {
    let size = values_size(values);
    if size > limit {
        return Err(Error::ValuesTooLarge {
            profile: profile.to_owned(),
            size,
            limit,
        });
    }
    Ok(size)
}

/// What helm puts into a stored release.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseContent<'a> {
    /// Release name.
    pub release: &'a str,
    /// Every file of the chart as helm loads it (`Chart.yaml`, `values.yaml`, templates, CRDs,
    /// other files), with its path inside the chart.
    pub chart_files: &'a [(&'a str, &'a [u8])],
    /// The user's merged values.
    pub values: &'a Value,
    /// The rendered manifest as helm stores it: `helm template` output (hooks included) without
    /// `--include-crds`, since helm keeps the `crds/` files only in the chart. Empty before
    /// rendering.
    pub manifest: &'a str,
}

/// `base64(gzip(json))` length: what helm stores for a release whose JSON is `release_json`.
/// gzip at best compression, as helm does.
pub fn stored_size(release_json: &[u8]) -> usize {
    let mut gz = flate2::write::GzEncoder::new(Counter(0), flate2::Compression::best());
    // Writing to a counter cannot fail.
    let _ = gz.write_all(release_json);
    let gzipped = gz.finish().map_or(usize::MAX, |c| c.0);
    base64_len(gzipped)
}

/// Length of the standard (padded) base64 encoding of `n` bytes.
pub fn base64_len(n: usize) -> usize {
    n.div_ceil(3).saturating_mul(4)
}

/// A JSON document shaped like helm's release (chart files base64 in `templates` / `files`,
/// `config`, `manifest`): its stored size is close to what helm will store.
pub fn release_document(content: &ReleaseContent<'_>) -> Vec<u8> {
    let mut templates = Vec::new();
    let mut files = Vec::new();
    for (name, data) in content.chart_files {
        let entry = json!({"name": name, "data": base64_encode(data)});
        if name.starts_with("templates/") {
            templates.push(entry);
        } else {
            files.push(entry);
        }
    }
    let doc = json!({
        "name": content.release,
        "info": {"status": "pending-install", "description": "Install complete"},
        "chart": {"templates": templates, "files": files},
        "config": content.values,
        "manifest": content.manifest,
        "version": 1,
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Bytes added to the estimate for what helm stores besides the content (timestamps, status,
/// chart metadata, the lock): measured against helm 4 as 150-250 bytes after compression.
pub const RELEASE_OVERHEAD_BYTES: usize = 256;

/// Estimated size of the Secret data helm will store for this release. Checked against real
/// helm 4 (`tests/helm_release_size.rs`): within a few hundred bytes for releases from 1 KiB to
/// 1.3 MiB.
pub fn estimate_stored_size(content: &ReleaseContent<'_>) -> usize {
    stored_size(&release_document(content)).saturating_add(RELEASE_OVERHEAD_BYTES)
}

/// Fails when helm's stored release for `profile` would be over
/// [`MAX_RELEASE_SECRET_BYTES`]; returns the estimated size otherwise.
pub fn check_release(profile: &str, content: &ReleaseContent<'_>) -> Result<usize> {
    check_stored_size(
        profile,
        content.release,
        estimate_stored_size(content),
        MAX_RELEASE_SECRET_BYTES,
    )
}

/// Compares an already computed stored size with `limit`.
pub fn check_stored_size(profile: &str, release: &str, size: usize, limit: usize) -> Result<usize> {
    if size > limit {
        return Err(Error::ReleaseTooLarge {
            profile: profile.to_owned(),
            release: release.to_owned(),
            size,
            limit,
        });
    }
    Ok(size)
}

/// A writer that only counts bytes.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard padded base64 (the chart files inside helm's release JSON are encoded so).
fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(base64_len(data.len()));
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes that gzip cannot shrink much (xorshift).
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("hello, world", "aGVsbG8sIHdvcmxk"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_len(plain.len()), encoded.len());
        }
        assert_eq!(base64_encode(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn values_limit_table() {
        let small = json!({"replicas": 3});
        assert_eq!(check_values("a", &small), Ok(values_size(&small)));
        assert_eq!(values_size(&small), r#"{"replicas":3}"#.len());
        // Just at the limit passes, one byte over fails.
        let overhead = values_size(&json!({"k": ""}));
        let at = json!({"k": "x".repeat(MAX_VALUES_BYTES - overhead)});
        assert_eq!(values_size(&at), MAX_VALUES_BYTES);
        assert!(check_values("a", &at).is_ok());
        let over = json!({"k": "x".repeat(MAX_VALUES_BYTES - overhead + 1)});
        let err = check_values("grafana", &over).unwrap_err();
        assert_eq!(
            err,
            Error::ValuesTooLarge {
                profile: "grafana".into(),
                size: MAX_VALUES_BYTES + 1,
                limit: MAX_VALUES_BYTES
            }
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("profile `grafana`: the merged values are 1.00 MiB (1048577 bytes)"),
            "{msg}"
        );
        assert!(
            msg.contains("over the limit of 1.00 MiB (1048576 bytes)"),
            "{msg}"
        );
        assert!(msg.contains("Move large data"), "{msg}");
        // The message never carries the values themselves.
        let secret = json!({"password": format!("s3cr3t-{}", "y".repeat(MAX_VALUES_BYTES))});
        let msg = check_values("db", &secret).unwrap_err().to_string();
        assert!(!msg.contains("s3cr3t"), "{msg}");
        assert!(check_values_with_limit("a", &small, 5).is_err());
    }

    #[test]
    fn stored_size_is_base64_of_gzip() {
        // Repetitive text compresses well; noise does not.
        let text = "apiVersion: v1\nkind: ConfigMap\n".repeat(10_000);
        let s = stored_size(text.as_bytes());
        assert!(s < text.len() / 20, "{s} of {}", text.len());
        assert_eq!(s % 4, 0);
        let n = noise(300_000, 7);
        let s = stored_size(&n);
        assert!(s >= base64_len(n.len()), "{s}");
        assert!(s < base64_len(n.len()) + 1024, "{s}");
        assert_eq!(stored_size(b""), base64_len(20)); // an empty gzip stream is 20 bytes
    }

    #[test]
    fn release_estimate_table() {
        let values = json!({"a": 1});
        let small_files: Vec<(&str, &[u8])> = vec![
            ("Chart.yaml", b"apiVersion: v2\nname: a\nversion: 1.0.0\n"),
            ("templates/cm.yaml", b"kind: ConfigMap\n"),
        ];
        let big_crd = noise(900_000, 3);
        let mid = noise(500_000, 5);
        type Files<'a> = Vec<(&'a str, &'a [u8])>;
        let cases: Vec<(Files, String, bool)> = vec![
            (small_files.clone(), "kind: ConfigMap\n".into(), true),
            // 900 kB of incompressible CRD, base64 in the chart: over 1 MiB stored.
            (vec![("crds/big.yaml", &big_crd)], String::new(), false),
            // 500 kB file + the same amount of rendered manifest (as base64 text): over.
            (
                vec![("files/blob", &mid)],
                base64_encode(&noise(400_000, 9)),
                false,
            ),
            // Highly repetitive large manifest compresses under the limit.
            (
                small_files.clone(),
                "kind: ConfigMap\n".repeat(200_000),
                true,
            ),
        ];
        for (files, manifest, fits) in cases {
            let c = ReleaseContent {
                release: "big",
                chart_files: &files,
                values: &values,
                manifest: &manifest,
            };
            let size = estimate_stored_size(&c);
            let r = check_release("big-profile", &c);
            assert_eq!(r.is_ok(), fits, "size {size}");
            match r {
                Ok(s) => assert_eq!(s, size),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        msg.starts_with("profile `big-profile`: helm would store release `big`"),
                        "{msg}"
                    );
                    assert!(msg.contains(&format!("({size} bytes)")), "{msg}");
                    assert!(msg.contains("over the 1.00 MiB (1048576 bytes)"), "{msg}");
                    assert!(msg.contains("etcdserver: request is too large"), "{msg}");
                }
            }
        }
        // Templates and other files both count.
        let doc = release_document(&ReleaseContent {
            release: "r",
            chart_files: &small_files,
            values: &values,
            manifest: "m",
        });
        let v: Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(v["chart"]["templates"][0]["name"], "templates/cm.yaml");
        assert_eq!(v["chart"]["files"][0]["name"], "Chart.yaml");
        assert_eq!(v["config"], values);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(900), "900 bytes");
        assert_eq!(human(12_288), "12.0 KiB (12288 bytes)");
        assert_eq!(human(1_310_720), "1.25 MiB (1310720 bytes)");
        assert_eq!(ETCD_REQUEST_LIMIT_BYTES, 1_572_864);
    }
}
