//! The stored-release estimate of `limits` against real helm 4: `helm install --dry-run=client
//! -o json` prints the release helm would store; `limits::stored_size` of that JSON is what the
//! release Secret would hold (base64 of gzip). The estimate strata makes before helm runs
//! (chart files + values + `helm template` output) must be close to it, and must give the same
//! verdict against the 1 MiB limit for charts clearly below and clearly above it.
//! (helm 3's client dry run needs a cluster, so only helm 4 is used.)

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use strata_core::limits::{self, ReleaseContent};

fn helm4() -> PathBuf {
    let tools = std::env::var_os("STRATA_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools"));
    let h = tools.join("helm4/helm");
    assert!(
        h.exists(),
        "{} is missing: run scripts/install-tools.sh (or set STRATA_TOOLS_DIR)",
        h.display()
    );
    h
}

/// Deterministic text that gzip cannot shrink much (base64 of xorshift noise), in lines.
fn noise_text(bytes: usize, seed: u64) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = seed | 1;
    let mut s = String::with_capacity(bytes + bytes / 64);
    for i in 0..bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(char::from(B64[(x >> 58) as usize]));
        if i % 64 == 63 {
            s.push('\n');
        }
    }
    s
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("helm runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every file of the chart under `dir`, as (path inside the chart, bytes).
fn chart_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

struct Case {
    name: &'static str,
    /// Extra files: (path, content).
    files: Vec<(&'static str, String)>,
    values: Value,
    over_limit: bool,
}

#[test]
fn estimate_matches_what_helm4_would_store() {
    let helm = helm4();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  blob: {{ .Values.blob | default \"\" | quote }}\n";
    let crd = |n: usize, seed: u64| {
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: things.example.com\n  annotations:\n    blob: |\n{}",
            noise_text(n, seed)
                .lines()
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        )
    };
    let cases = vec![
        Case {
            name: "small",
            files: vec![],
            values: json!({"blob": "x"}),
            over_limit: false,
        },
        Case {
            name: "crd-300k",
            files: vec![("crds/things.yaml", crd(300_000, 3))],
            values: json!({}),
            over_limit: false,
        },
        Case {
            name: "crd-1m",
            files: vec![("crds/things.yaml", crd(1_000_000, 5))],
            values: json!({}),
            over_limit: true,
        },
        Case {
            // The values are stored twice (config and the rendered ConfigMap).
            name: "values-600k",
            files: vec![],
            values: json!({"blob": noise_text(600_000, 7).replace('\n', "")}),
            over_limit: true,
        },
        Case {
            name: "files-200k-values-200k",
            files: vec![("files/data.txt", noise_text(200_000, 11))],
            values: json!({"blob": noise_text(200_000, 13).replace('\n', "")}),
            over_limit: false,
        },
    ];
    let tmp = tempfile::tempdir().unwrap();
    for case in cases {
        let dir = tmp.path().join(case.name);
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        std::fs::write(
            dir.join("Chart.yaml"),
            format!("apiVersion: v2\nname: {}\nversion: 0.1.0\n", case.name),
        )
        .unwrap();
        std::fs::write(dir.join("values.yaml"), "blob: \"\"\n").unwrap();
        std::fs::write(dir.join("templates/cm.yaml"), cm).unwrap();
        for (path, content) in &case.files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let values_file = tmp.path().join(format!("{}-values.json", case.name));
        std::fs::write(&values_file, case.values.to_string()).unwrap();

        let release_json = run(Command::new(&helm)
            .args(["install", "rel", "--dry-run=client", "-o", "json", "-f"])
            .arg(&values_file)
            .arg(&dir)
            .env("HELM_CACHE_HOME", tmp.path().join("cache"))
            .env("HELM_CONFIG_HOME", tmp.path().join("config"))
            .env("HELM_DATA_HOME", tmp.path().join("data")));
        let actual = limits::stored_size(&release_json);

        let manifest = String::from_utf8(run(Command::new(&helm)
            .args(["template", "rel", "-f"])
            .arg(&values_file)
            .arg(&dir)
            .env("HELM_CACHE_HOME", tmp.path().join("cache"))
            .env("HELM_CONFIG_HOME", tmp.path().join("config"))
            .env("HELM_DATA_HOME", tmp.path().join("data"))))
        .unwrap();
        let owned = chart_files(&dir);
        let files: Vec<(&str, &[u8])> = owned
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let content = ReleaseContent {
            release: "rel",
            chart_files: &files,
            values: &case.values,
            manifest: &manifest,
        };
        let estimate = limits::estimate_stored_size(&content);
        println!(
            "{}: helm would store {actual} bytes, estimate {estimate} bytes",
            case.name
        );
        // Within 10 % (or 4 KiB for small releases) of what helm stores.
        let tolerance = (actual / 10).max(4096);
        assert!(
            estimate.abs_diff(actual) <= tolerance,
            "{}: estimate {estimate} vs helm {actual}",
            case.name
        );
        assert_eq!(
            actual > limits::MAX_RELEASE_SECRET_BYTES,
            case.over_limit,
            "{}: the case is not where it should be ({actual} bytes)",
            case.name
        );
        assert_eq!(
            limits::check_release(case.name, &content).is_err(),
            case.over_limit,
            "{}: verdict",
            case.name
        );
    }
}
