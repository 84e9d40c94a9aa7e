//! Dependencies of charts kept in Git, resolved and built as `helm dependency build` would,
//! but through strata's own sources (the [`ChartStore`]: its cache, the profile list's
//! repository credentials, digest checks), never by letting helm reach the network.
//!
//! A chart directory whose `Chart.yaml` lists `dependencies:` is copied into a work
//! directory; each dependency not vendored under `charts/` is added there:
//! - `file://<path>`: a chart directory of the same checkout, relative to the chart. The path
//!   must stay inside the repository (`..` climbing out, an absolute path or a symlink out is
//!   rejected by name, never followed); its own dependencies are built the same way, up to
//!   [`MAX_DEPTH`] levels, a cycle being a problem.
//! - `https://`, `http://`, `oci://`, `@<name>` or `alias:<name>` (a repository of the profile
//!   list by name): pulled through the [`ChartStore`] as `charts/<name>-<version>.tgz`, with
//!   the credentials of the profile list's repository whose URL (or name) it is.
//!
//! A `Chart.lock` is honoured as helm does: its `digest` must match the `dependencies` of
//! `Chart.yaml` (helm's `HashReq`), and its versions are the ones pulled.

use std::path::Path;

use strata_core::chartlock::{lock_digest, normalize};
use strata_core::version::VersionConstraint;

use crate::source::charts::{ChartStore, RepoSpec};
use crate::source::tree::{self, Node, Resolved};

/// Most levels of nested `file://` dependencies built (the chart itself is level 0).
pub const MAX_DEPTH: usize = 5;

/// Why a dependency could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepFailure {
    /// The revision's fault: a message naming the chart and the dependency.
    Problem(String),
    /// A source could not be read now (a repository down): try again later.
    Unavailable(String),
}

/// What the dependencies of one chart are built with.
pub struct Builder<'a> {
    /// The Git checkout of the revision.
    pub checkout: &'a Path,
    pub charts: &'a ChartStore,
    /// The profile list's repositories, with their credentials.
    pub repos: Vec<RepoSpec>,
}

/// A `Chart.lock`.
#[derive(Debug, Clone, serde::Deserialize)]
struct ChartLock {
    #[serde(default)]
    dependencies: Vec<LockedDep>,
    #[serde(default)]
    digest: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct LockedDep {
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    repository: String,
}

impl Builder<'_> {
    /// Copies the chart at `chart_rel` (a resolved directory of the checkout whose symlinks
    /// were checked) into `dest` with its dependencies under `charts/`. Every failure found
    /// is returned.
    pub async fn build(&self, chart_rel: &str, dest: &Path) -> Result<(), Vec<DepFailure>> {
        let mut chain = vec![chart_rel.to_string()];
        self.build_into(chart_rel, dest, &mut chain).await
    }

    fn build_into<'s>(
        &'s self,
        chart_rel: &'s str,
        dest: &'s Path,
        chain: &'s mut Vec<String>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Vec<DepFailure>>> + Send + 's>> {
        Box::pin(async move {
            let io = |what: &str, e: std::io::Error| {
                vec![DepFailure::Unavailable(format!(
                    "cannot {what} chart {chart_rel} in the work directory: {e}"
                ))]
            };
            copy_dir(&self.checkout.join(chart_rel), dest).map_err(|e| io("copy", e))?;
            let text = std::fs::read_to_string(dest.join("Chart.yaml"))
                .map_err(|e| io("read Chart.yaml of", e))?;
            let yaml: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| {
                vec![DepFailure::Problem(format!(
                    "{chart_rel}/Chart.yaml is not valid YAML: {e}"
                ))]
            })?;
            let chart = yaml
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or(chart_rel)
                .to_string();
            let deps: Vec<serde_json::Value> = yaml
                .get("dependencies")
                .and_then(|d| d.as_array())
                .cloned()
                .unwrap_or_default();
            if deps.is_empty() {
                return Ok(());
            }
            let mut failures = Vec::new();
            let problem = |dep: &str, message: String| {
                DepFailure::Problem(format!("chart {chart}: dependency {dep}: {message}"))
            };
            let lock = match std::fs::read_to_string(dest.join("Chart.lock")) {
                // As helm does, `@name` / `alias:name` become the repository's URL first.
                Ok(t) => match check_lock(&self.with_urls(&deps), &t) {
                    Ok(l) => Some(l),
                    Err(m) => return Err(vec![DepFailure::Problem(format!("chart {chart}: {m}"))]),
                },
                Err(_) => None,
            };
            std::fs::create_dir_all(dest.join("charts")).map_err(|e| io("prepare", e))?;
            for (i, dep) in deps.iter().enumerate() {
                let field = |k: &str| dep.get(k).and_then(|v| v.as_str()).unwrap_or("");
                let (name, repository) = (field("name"), field("repository"));
                if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                    failures.push(DepFailure::Problem(format!(
                        "chart {chart}: dependencies[{i}] has no valid name ({name:?})"
                    )));
                    continue;
                }
                if vendored(&dest.join("charts"), name) {
                    continue;
                }
                let locked = lock.as_ref().and_then(|l| {
                    l.dependencies
                        .iter()
                        .find(|d| d.name == name && d.repository == self.url_of(repository))
                });
                let wanted = match locked {
                    Some(l) => l.version.clone(),
                    None => match field("version") {
                        "" => "*".to_string(),
                        v => v.to_string(),
                    },
                };
                let constraint = match VersionConstraint::parse(&wanted) {
                    Ok(c) => c,
                    Err(e) => {
                        failures.push(problem(name, format!("version {wanted:?}: {e}")));
                        continue;
                    }
                };
                let shown = format!("{name} ({repository})");
                if let Some(path) = repository.strip_prefix("file://") {
                    let rel = match local_path(chart_rel, path, self.checkout) {
                        Ok(r) => r,
                        Err(m) => {
                            failures.push(problem(&shown, m));
                            continue;
                        }
                    };
                    if chain.contains(&rel) {
                        failures.push(problem(
                            &shown,
                            format!("a dependency cycle: {} -> {rel}", chain.join(" -> ")),
                        ));
                        continue;
                    }
                    if chain.len() > MAX_DEPTH {
                        failures.push(problem(
                            &shown,
                            format!(
                                "file:// dependencies nested more than {MAX_DEPTH} levels deep ({})",
                                chain.join(" -> ")
                            ),
                        ));
                        continue;
                    }
                    if let Err(ms) = tree::check_chart_dir(self.checkout, &rel) {
                        failures.extend(ms.into_iter().map(|m| problem(&shown, m)));
                        continue;
                    }
                    let sub = match read_meta(&self.checkout.join(&rel)) {
                        Ok(m) => m,
                        Err(m) => {
                            failures.push(problem(&shown, m));
                            continue;
                        }
                    };
                    if sub.0 != name {
                        failures.push(problem(
                            &shown,
                            format!("the chart at {rel} is named {}, not {name}", sub.0),
                        ));
                        continue;
                    }
                    if !constraint.matches_str(&sub.1) {
                        failures.push(problem(
                            &shown,
                            format!(
                                "the chart at {rel} has version {}, which does not match {wanted}",
                                sub.1
                            ),
                        ));
                        continue;
                    }
                    chain.push(rel.clone());
                    let built = self
                        .build_into(&rel, &dest.join("charts").join(name), chain)
                        .await;
                    chain.pop();
                    if let Err(fs) = built {
                        failures.extend(fs);
                    }
                    continue;
                }
                let spec = match self.repo_spec(repository) {
                    Ok(s) => s,
                    Err(m) => {
                        failures.push(problem(&shown, m));
                        continue;
                    }
                };
                match self.charts.pull(spec, name, &constraint).await {
                    Ok(pulled) => {
                        let to = dest
                            .join("charts")
                            .join(format!("{name}-{}.tgz", pulled.version));
                        if let Err(e) = std::fs::copy(&pulled.path, &to) {
                            failures.push(DepFailure::Unavailable(format!(
                                "chart {chart}: dependency {shown}: cannot copy {}: {e}",
                                pulled.path.display()
                            )));
                        }
                    }
                    Err(e) if transient(&e) => failures.push(DepFailure::Unavailable(format!(
                        "chart {chart}: dependency {shown}: {e}"
                    ))),
                    Err(e) => failures.push(problem(&shown, e.to_string())),
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures)
            }
        })
    }

    /// `repository` with `@name` / `alias:name` of a known repository replaced by its URL.
    fn url_of(&self, repository: &str) -> String {
        repository
            .strip_prefix('@')
            .or_else(|| repository.strip_prefix("alias:"))
            .and_then(|n| self.repos.iter().find(|r| r.name == n))
            .map(|r| r.url.clone())
            .unwrap_or_else(|| repository.to_string())
    }

    /// `deps` with their repository names replaced by URLs ([`Builder::url_of`]).
    fn with_urls(&self, deps: &[serde_json::Value]) -> Vec<serde_json::Value> {
        deps.iter()
            .map(|d| {
                let mut d = d.clone();
                if let Some(r) = d.get("repository").and_then(|r| r.as_str()) {
                    let url = self.url_of(r);
                    d["repository"] = serde_json::Value::String(url);
                }
                d
            })
            .collect()
    }

    /// The repository a dependency names: a URL (with the credentials of the profile list's
    /// repository at that URL) or `@name` / `alias:name` (a repository of the profile list).
    fn repo_spec(&self, repository: &str) -> Result<RepoSpec, String> {
        if let Some(name) = repository
            .strip_prefix('@')
            .or_else(|| repository.strip_prefix("alias:"))
        {
            return self
                .repos
                .iter()
                .find(|r| r.name == name)
                .cloned()
                .ok_or_else(|| {
                    let names: Vec<&str> = self.repos.iter().map(|r| r.name.as_str()).collect();
                    format!(
                        "{repository} names no repository of the profile list (its repositories: {}); declare it under repositories: or use its URL",
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    )
                });
        }
        if repository.is_empty() {
            return Err(
                "it has no repository and is not vendored under charts/; give repository: (file://, https://, oci:// or @<repository of the profile list>)"
                    .into(),
            );
        }
        let scheme_ok = ["https://", "http://", "oci://"]
            .iter()
            .any(|s| repository.starts_with(s));
        if !scheme_ok {
            return Err(format!(
                "repository {repository} is not supported; use file://<path in the repository>, https://, http://, oci:// or @<repository of the profile list>"
            ));
        }
        let norm = |u: &str| u.trim_end_matches('/').to_string();
        Ok(self
            .repos
            .iter()
            .find(|r| norm(&r.url) == norm(repository))
            .cloned()
            .unwrap_or_else(|| RepoSpec::new(repository, repository)))
    }
}

fn transient(e: &crate::source::charts::Error) -> bool {
    match e {
        crate::source::charts::Error::Http { status, .. } => {
            status.is_none_or(|s| s >= 500 || s == 429 || s == 408)
        }
        crate::source::charts::Error::Io { .. } => true,
        _ => false,
    }
}

/// Whether `charts/` already holds `name` (a directory, or an archive `name-<version>.tgz`).
fn vendored(charts: &Path, name: &str) -> bool {
    if charts.join(name).join("Chart.yaml").is_file() {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(charts) else {
        return false;
    };
    entries.flatten().any(|e| {
        let f = e.file_name().to_string_lossy().into_owned();
        f.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.strip_suffix(".tgz"))
            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit() || c == 'v'))
    })
}

/// The name and version of the chart directory `dir`.
fn read_meta(dir: &Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(dir.join("Chart.yaml"))
        .map_err(|e| format!("cannot read its Chart.yaml: {e}"))?;
    let v: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| format!("its Chart.yaml is invalid: {e}"))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    Ok((s("name"), s("version")))
}

/// The checkout-relative directory of `file://<path>` given in the chart at `chart_rel`:
/// lexically inside the repository, then resolved without following a symlink out of it.
pub fn local_path(chart_rel: &str, path: &str, checkout: &Path) -> Result<String, String> {
    let rel = normalize(chart_rel, path)?;
    match tree::resolve(&rel, "", |p| tree::fs_node(checkout, p)) {
        Ok(Resolved::Found {
            path,
            node: Node::Dir,
        }) => Ok(path),
        Ok(Resolved::Found { path, .. }) => Err(format!(
            "file://{path} is not a chart directory ({path} is a file)"
        )),
        Ok(Resolved::Missing) => Err(format!(
            "file://{path} names {rel}, which does not exist in the repository"
        )),
        Err(e) => Err(e.describe("the repository")),
    }
}

/// Copies the directory `from` to `to` (created), following symlinks (a chart's were
/// checked to stay inside it), skipping `.git`.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == ".git" {
            continue;
        }
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if std::fs::metadata(&src)?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

const STALE: &str = "Chart.lock is out of date; run helm dependency update";

/// The lock in `text`, checked against `deps` (the raw `dependencies` of Chart.yaml).
fn check_lock(deps: &[serde_json::Value], text: &str) -> Result<ChartLock, String> {
    let raw: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| format!("Chart.lock is not valid YAML: {e}"))?;
    let lock: ChartLock =
        serde_json::from_value(raw.clone()).map_err(|e| format!("Chart.lock is invalid: {e}"))?;
    let locked: Vec<serde_json::Value> = raw
        .get("dependencies")
        .and_then(|d| d.as_array())
        .cloned()
        .unwrap_or_default();
    if lock_digest(deps, &locked) == lock.digest {
        return Ok(lock);
    }
    // helm marshals `import-values` from its own types, which this digest may not reproduce
    // byte for byte: then the lock is judged by its content (every dependency locked at a
    // version its constraint allows).
    let has_import_values = deps.iter().any(|d| d.get("import-values").is_some());
    if has_import_values && lock_covers(deps, &lock) {
        return Ok(lock);
    }
    Err(format!(
        "{STALE} (its digest {} does not match the dependencies of Chart.yaml)",
        if lock.digest.is_empty() {
            "(none)"
        } else {
            &lock.digest
        }
    ))
}

/// Whether every dependency is locked (same name and repository) at a version it allows.
fn lock_covers(deps: &[serde_json::Value], lock: &ChartLock) -> bool {
    deps.len() == lock.dependencies.len()
        && deps.iter().all(|d| {
            let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("");
            lock.dependencies.iter().any(|l| {
                l.name == s("name")
                    && l.repository == s("repository")
                    && (s("version").is_empty()
                        || VersionConstraint::parse(s("version"))
                            .is_ok_and(|c| c.matches_str(&l.version)))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(yaml: &str) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        v["dependencies"].as_array().unwrap().clone()
    }

    #[test]
    fn a_stale_lock_is_a_problem_and_a_fresh_one_is_used() {
        let req = deps(
            "dependencies:\n  - name: sub\n    version: \">=0.1.0\"\n    repository: file://../sub\n",
        );
        let fresh = "dependencies:\n- name: sub\n  repository: file://../sub\n  version: 0.2.0\ndigest: sha256:5e96d23c183a09a017ef112bd482e3e200d4107852dd855fb41955de74aa023d\n";
        let lock = check_lock(&req, fresh).unwrap();
        assert_eq!(lock.dependencies[0].version, "0.2.0");
        let edited = deps(
            "dependencies:\n  - name: sub\n    version: \">=0.3.0\"\n    repository: file://../sub\n",
        );
        let e = check_lock(&edited, fresh).unwrap_err();
        assert!(
            e.contains("Chart.lock is out of date; run helm dependency update"),
            "{e}"
        );
    }

    #[test]
    fn repository_names_are_urls_for_the_lock() {
        let store =
            ChartStore::new(tempfile::tempdir().unwrap().path(), Default::default()).unwrap();
        let builder = Builder {
            checkout: Path::new("/nonexistent"),
            charts: &store,
            repos: vec![RepoSpec::new("reg", "oci://r.example/charts")],
        };
        let req =
            deps("dependencies:\n  - name: a\n    version: 1.0.0\n    repository: \"@reg\"\n");
        let with = builder.with_urls(&req);
        assert_eq!(with[0]["repository"], "oci://r.example/charts");
        let locked = vec![
            serde_json::json!({"name": "a", "version": "1.0.0", "repository": "oci://r.example/charts"}),
        ];
        let text = format!(
            "dependencies:\n- name: a\n  repository: oci://r.example/charts\n  version: 1.0.0\ndigest: {}\n",
            lock_digest(&with, &locked)
        );
        assert!(check_lock(&with, &text).is_ok());
        assert_eq!(builder.url_of("alias:reg"), "oci://r.example/charts");
        assert_eq!(builder.url_of("@other"), "@other");
    }

    #[test]
    fn a_symlink_out_of_the_repository_is_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        std::fs::create_dir_all(dir.path().join("partials")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
        assert_eq!(
            local_path("app", "../partials", dir.path()).unwrap(),
            "partials"
        );
        let e = local_path("app", "../out", dir.path()).unwrap_err();
        assert!(e.contains("out is a symlink to /etc"), "{e}");
        let e = local_path("app", "../missing", dir.path()).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn vendored_dependencies_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!vendored(dir.path(), "sub"));
        std::fs::write(dir.path().join("sub-1.2.3.tgz"), b"x").unwrap();
        assert!(vendored(dir.path(), "sub"));
        assert!(!vendored(dir.path(), "su"));
        std::fs::create_dir_all(dir.path().join("other")).unwrap();
        std::fs::write(dir.path().join("other/Chart.yaml"), "name: other\n").unwrap();
        assert!(vendored(dir.path(), "other"));
    }

    fn write_chart(root: &Path, rel: &str, name: &str, deps: &str) {
        std::fs::create_dir_all(root.join(rel)).unwrap();
        let mut y = format!("apiVersion: v2\nname: {name}\nversion: 0.1.0\n");
        if !deps.is_empty() {
            y.push_str("dependencies:\n");
            y.push_str(deps);
        }
        std::fs::write(root.join(rel).join("Chart.yaml"), y).unwrap();
    }

    fn file_dep(name: &str, path: &str) -> String {
        format!("  - name: {name}\n    version: 0.1.x\n    repository: file://{path}\n")
    }

    #[tokio::test]
    async fn nested_file_dependencies_are_built_and_cycles_refused() {
        let repo = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let store = ChartStore::new(work.path().join("cache"), Default::default()).unwrap();
        let root = repo.path();
        write_chart(root, "charts/app", "app", &file_dep("mid", "../mid"));
        write_chart(
            root,
            "charts/mid",
            "mid",
            &file_dep("leaf", "../../lib/leaf"),
        );
        write_chart(root, "lib/leaf", "leaf", "");
        let builder = Builder {
            checkout: root,
            charts: &store,
            repos: Vec::new(),
        };
        let dest = work.path().join("out/app");
        builder.build("charts/app", &dest).await.unwrap();
        assert!(dest.join("charts/mid/Chart.yaml").is_file());
        assert!(dest.join("charts/mid/charts/leaf/Chart.yaml").is_file());
        assert!(
            !root.join("charts/app/charts").exists(),
            "the checkout is untouched"
        );

        // leaf -> app: a cycle app -> mid -> leaf -> app.
        write_chart(
            root,
            "lib/leaf",
            "leaf",
            &file_dep("app", "../../charts/app"),
        );
        let fails = builder
            .build("charts/app", &work.path().join("out2/app"))
            .await
            .unwrap_err();
        let text = format!("{fails:?}");
        assert!(
            text.contains("a dependency cycle: charts/app -> charts/mid -> lib/leaf -> charts/app"),
            "{text}"
        );

        // Unknown repository name, unsupported scheme, wrong version: each named.
        write_chart(
            root,
            "charts/bad",
            "bad",
            "  - name: x\n    repository: \"@nope\"\n  - name: why\n    repository: ftp://h/\n  - name: leaf\n    version: 2.x\n    repository: file://../../lib/leaf\n",
        );
        let fails = builder
            .build("charts/bad", &work.path().join("out3/bad"))
            .await
            .unwrap_err();
        let text = format!("{fails:?}");
        assert_eq!(fails.len(), 3, "{text}");
        assert!(
            text.contains("chart bad: dependency x (@nope): @nope names no repository"),
            "{text}"
        );
        assert!(
            text.contains("dependency why (ftp://h/): repository ftp://h/ is not supported"),
            "{text}"
        );
        assert!(
            text.contains("has version 0.1.0, which does not match 2.x"),
            "{text}"
        );
    }
}
