//! `strata bundle`: one revision (its Git commit with its history, every chart pulled from a
//! repository at its exact version, dependencies of charts from Git included) as one tar
//! archive with a lock of versions and digests; and `strata bundle push`: the archive into a
//! site's OCI registry or HTTP chart repository directory and its Git server.
//!
//! The archive (uncompressed tar, entries in this order):
//! - `bundle.lock.json`: the [`Lock`];
//! - `git/repository.bundle`: a `git bundle` of the commit (its one ref
//!   `refs/strata/bundle`), so the site gets the same commit id;
//! - `charts/<name>-<version>-<digest prefix>.tgz`: each archive as the loader fetched it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::config::{SourceConfig, WorkDir};
use crate::executor::process::{self, Command, Redactor};
use crate::observe::status::ProblemView;
use crate::source::revision::{LoadError, Loader};

/// The lock's name in the archive.
pub const LOCK_FILE: &str = "bundle.lock.json";
/// The `git bundle` in the archive.
pub const GIT_BUNDLE: &str = "git/repository.bundle";
/// The ref the `git bundle` holds the commit under.
pub const BUNDLE_REF: &str = "refs/strata/bundle";
pub const API_VERSION: &str = "strata.dev/v1alpha1";
pub const KIND: &str = "BundleLock";
/// Largest entry read from a bundle (a chart archive is at most 64 MiB; a Git history may be
/// larger).
const MAX_ENTRY: u64 = 4 * 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot prepare the work dir: {0}")]
    WorkDir(std::io::Error),
    #[error(transparent)]
    Setup(#[from] crate::source::revision::SetupError),
    #[error("{0}")]
    Fetch(#[from] crate::source::git::Error),
    #[error("the revision is invalid, nothing bundled: {} problem(s):{}", .0.len(), list(.0))]
    Invalid(Vec<ProblemView>),
    #[error("the revision cannot be loaded now: {0}; try again")]
    Unavailable(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the bundle {}: {message}", path.display())]
    Bundle { path: PathBuf, message: String },
    #[error("the bundle {} is refused: {} problem(s):\n  - {}", path.display(), problems.len(), problems.join("\n  - "))]
    Refused {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("{0}")]
    Push(String),
}

fn list(problems: &[ProblemView]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The lock of a bundle: what it holds, with every chart's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lock {
    pub api_version: String,
    pub kind: String,
    /// The Git commit (full id).
    pub commit: String,
    /// The Git URL as given to `strata bundle` (credentials removed).
    pub git_url: String,
    /// The ref given to `strata bundle` (what `push` writes by default).
    pub git_ref: String,
    /// The profile list's path (cluster name filled in).
    pub profiles_path: String,
    /// The `git bundle` entry of the archive.
    pub git_bundle: String,
    /// Every chart pulled from a repository, sorted by repository, name, version.
    pub charts: Vec<LockedChart>,
}

/// One chart of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockedChart {
    /// The repository URL as the profile list (or a chart's dependency) declares it.
    pub repository: String,
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of the archive.
    pub digest: String,
    /// The archive's entry in the bundle.
    pub file: String,
}

impl LockedChart {
    /// `name version (repository)`, how problems name a chart.
    pub fn label(&self) -> String {
        format!("chart {} {} ({})", self.name, self.version, self.repository)
    }

    /// Whether the chart comes from an `oci://` registry.
    pub fn is_oci(&self) -> bool {
        self.repository.to_ascii_lowercase().starts_with("oci://")
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Whether `name` is a safe single path component (chart names, versions).
fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !s.contains(['/', '\\', '\0'])
        && !s.chars().any(char::is_control)
}

impl Lock {
    /// Parses and checks a lock: every problem at once.
    pub fn parse(bytes: &[u8]) -> Result<Self, Vec<String>> {
        let lock: Lock =
            serde_json::from_slice(bytes).map_err(|e| vec![format!("{LOCK_FILE}: {e}")])?;
        let problems = lock.problems();
        if problems.is_empty() {
            Ok(lock)
        } else {
            Err(problems)
        }
    }

    /// What is wrong with this lock.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.api_version != API_VERSION || self.kind != KIND {
            out.push(format!(
                "{LOCK_FILE}: apiVersion/kind {}/{} is not {API_VERSION}/{KIND}; use a strata that knows this bundle",
                self.api_version, self.kind
            ));
        }
        if !is_hex(&self.commit, 40) && !is_hex(&self.commit, 64) {
            out.push(format!(
                "{LOCK_FILE}: commit {:?} is not a full commit id",
                self.commit
            ));
        }
        if self.git_bundle != GIT_BUNDLE {
            out.push(format!(
                "{LOCK_FILE}: gitBundle is {:?}, expected {GIT_BUNDLE}",
                self.git_bundle
            ));
        }
        let mut seen = BTreeSet::new();
        let mut files = BTreeSet::new();
        for (i, c) in self.charts.iter().enumerate() {
            let at = format!("{LOCK_FILE}: charts[{i}]");
            let lower = c.repository.to_ascii_lowercase();
            if !["http://", "https://", "oci://"]
                .iter()
                .any(|s| lower.starts_with(s))
            {
                out.push(format!(
                    "{at}.repository {:?} is not an http(s):// or oci:// URL",
                    c.repository
                ));
            }
            if !safe_component(&c.name) {
                out.push(format!("{at}.name {:?} is not a chart name", c.name));
            }
            if !safe_component(&c.version) {
                out.push(format!("{at}.version {:?} is not a version", c.version));
            }
            if !c
                .digest
                .strip_prefix("sha256:")
                .is_some_and(|h| is_hex(h, 64))
            {
                out.push(format!(
                    "{at}.digest {:?} is not sha256:<64 hex digits>",
                    c.digest
                ));
            }
            if !c
                .file
                .strip_prefix("charts/")
                .is_some_and(|f| safe_component(f) && f.ends_with(".tgz"))
            {
                out.push(format!("{at}.file {:?} is not charts/<name>.tgz", c.file));
            }
            if !seen.insert((c.repository.as_str(), c.name.as_str(), c.version.as_str())) {
                out.push(format!("{at}: {} is listed twice", c.label()));
            }
            if !files.insert(c.file.as_str()) {
                out.push(format!("{at}.file {} is listed twice", c.file));
            }
        }
        out
    }
}

/// Checks a chart archive of a bundle against its lock entry: its digest, and the name and
/// version its Chart.yaml says (the problem names the chart).
pub fn verify_chart(chart: &LockedChart, archive: Option<&[u8]>) -> Result<(), String> {
    let Some(bytes) = archive else {
        return Err(format!(
            "{}: {} is missing from the bundle",
            chart.label(),
            chart.file
        ));
    };
    let actual = sha256(bytes);
    if actual != chart.digest {
        return Err(format!(
            "{}: digest mismatch: the lock says {}, {} has {}; the bundle was changed after it was made (or is damaged): make it again",
            chart.label(),
            chart.digest,
            chart.file,
            actual
        ));
    }
    Ok(())
}

/// Checks the Chart.yaml of a verified archive names the locked chart.
fn verify_chart_yaml(chart: &LockedChart, archive: &Path) -> Result<(), String> {
    let text = crate::source::charts::chart_yaml_from_tgz(archive)
        .map_err(|e| format!("{}: {e}", chart.label()))?;
    let meta = strata_core::chart::parse_chart_yaml(&chart.file, &text)
        .map_err(|ps| format!("{}: {ps}", chart.label()))?;
    if meta.name != chart.name || meta.version != chart.version {
        return Err(format!(
            "{}: the archive holds chart {} {}",
            chart.label(),
            meta.name,
            meta.version
        ));
    }
    Ok(())
}

/// A URL without its userinfo (`https://user:pw@host/x` -> `https://host/x`).
fn without_userinfo(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[i + 3..];
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..i + 3], &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// What `strata bundle` made.
#[derive(Debug)]
pub struct Made {
    pub lock: Lock,
    pub output: PathBuf,
}

/// `strata bundle`: load the revision as `strata plan` does (refusing an invalid one with
/// all its problems) and write the archive to `output`.
pub async fn create(source: SourceConfig, output: &Path) -> Result<Made> {
    let git_url = without_userinfo(&source.git_url);
    let git_ref = source.git_ref.clone();
    let work_dir =
        WorkDir::prepare(source.work_dir.as_deref(), "strata-bundle-").map_err(Error::WorkDir)?;
    let loader = Loader::new(source, work_dir.path(), Redactor::new()).await?;
    let fetched = loader.fetch().await?;
    let loaded = match loader.load(&fetched, loader.cluster_name()).await {
        Ok(l) => l,
        Err(LoadError::Invalid(problems)) => return Err(Error::Invalid(problems)),
        Err(LoadError::Unavailable(errors)) => return Err(Error::Unavailable(errors.join("; "))),
    };
    let staging = work_dir.path().join("bundle");
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let git_bundle = staging.join("repository.bundle");
    loader.git().bundle(&fetched.commit, &git_bundle).await?;
    let mut charts: Vec<(LockedChart, PathBuf)> = loader
        .pulled_charts()
        .into_iter()
        .map(|(repository, c)| {
            let short: String = c.digest.chars().take(12).collect();
            (
                LockedChart {
                    repository,
                    file: format!("charts/{}-{}-{short}.tgz", c.name, c.version),
                    name: c.name,
                    version: c.version,
                    digest: format!("sha256:{}", c.digest),
                },
                c.path,
            )
        })
        .collect();
    charts.sort_by(|a, b| {
        (&a.0.repository, &a.0.name, &a.0.version).cmp(&(&b.0.repository, &b.0.name, &b.0.version))
    });
    let lock = Lock {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        commit: fetched.commit.clone(),
        git_url,
        git_ref,
        profiles_path: loaded.profiles_path.clone(),
        git_bundle: GIT_BUNDLE.into(),
        charts: charts.iter().map(|(c, _)| c.clone()).collect(),
    };
    let problems = lock.problems();
    if !problems.is_empty() {
        return Err(Error::Bundle {
            path: output.to_path_buf(),
            message: problems.join("; "),
        });
    }
    // Written beside the output and renamed: a partial bundle never has the output's name.
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".strata-bundle-")
        .tempfile_in(&dir)
        .map_err(io(&dir))?;
    {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp.as_file()));
        let lock_json = serde_json::to_vec_pretty(&lock).expect("a lock serialises");
        append(&mut tar, LOCK_FILE, &lock_json).map_err(io(output))?;
        let bytes = std::fs::read(&git_bundle).map_err(io(&git_bundle))?;
        append(&mut tar, GIT_BUNDLE, &bytes).map_err(io(output))?;
        for (c, path) in &charts {
            let bytes = std::fs::read(path).map_err(io(path))?;
            // The cache was verified when pulled; check again what goes into the bundle.
            verify_chart(c, Some(&bytes)).map_err(|message| Error::Bundle {
                path: output.to_path_buf(),
                message,
            })?;
            append(&mut tar, &c.file, &bytes).map_err(io(output))?;
        }
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(io(output))?;
    }
    tmp.as_file().sync_all().map_err(io(output))?;
    tmp.persist(output).map_err(|e| Error::Io {
        path: output.to_path_buf(),
        source: e.error,
    })?;
    Ok(Made {
        lock,
        output: output.to_path_buf(),
    })
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes)
}

/// A bundle read back: its lock and its entries.
pub struct Opened {
    pub lock: Lock,
    pub entries: BTreeMap<String, Vec<u8>>,
}

/// Reads a bundle: regular files only, at the names the lock gives; every problem of the
/// lock and of every chart (missing, digest, Chart.yaml) at once.
pub fn open(path: &Path, scratch: &Path) -> Result<Opened> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let bad = |message: String| Error::Bundle {
        path: path.to_path_buf(),
        message,
    };
    let mut entries = BTreeMap::new();
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
    {
        let entry = entry.map_err(|e| bad(format!("not a tar archive: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(format!("entry {name} is not a regular file")));
        }
        if entry.size() > MAX_ENTRY {
            return Err(bad(format!(
                "entry {name} is larger than {MAX_ENTRY} bytes"
            )));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .take(MAX_ENTRY)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("entry {name}: {e}")))?;
        if entries.insert(name.clone(), bytes).is_some() {
            return Err(bad(format!("entry {name} is there twice")));
        }
    }
    let lock_bytes = entries
        .get(LOCK_FILE)
        .ok_or_else(|| bad(format!("has no {LOCK_FILE}; is it a strata bundle?")))?;
    let lock = Lock::parse(lock_bytes).map_err(|problems| Error::Refused {
        path: path.to_path_buf(),
        problems,
    })?;
    let mut problems = Vec::new();
    if !entries.contains_key(GIT_BUNDLE) {
        problems.push(format!("{GIT_BUNDLE} is missing from the bundle"));
    }
    let known: BTreeSet<&str> = lock
        .charts
        .iter()
        .map(|c| c.file.as_str())
        .chain([LOCK_FILE, GIT_BUNDLE])
        .collect();
    for name in entries.keys() {
        if !known.contains(name.as_str()) {
            problems.push(format!("entry {name} is not in the lock"));
        }
    }
    std::fs::create_dir_all(scratch).map_err(io(scratch))?;
    for c in &lock.charts {
        let bytes = entries.get(&c.file).map(Vec::as_slice);
        match verify_chart(c, bytes) {
            Ok(()) => {
                let tmp = scratch.join("check.tgz");
                std::fs::write(&tmp, bytes.unwrap_or_default()).map_err(io(&tmp))?;
                if let Err(p) = verify_chart_yaml(c, &tmp) {
                    problems.push(p);
                }
            }
            Err(p) => problems.push(p),
        }
    }
    if !problems.is_empty() {
        return Err(Error::Refused {
            path: path.to_path_buf(),
            problems,
        });
    }
    Ok(Opened { lock, entries })
}

/// Where `strata bundle push` puts things.
#[derive(Debug, Clone)]
pub struct PushTarget {
    /// The site's Git repository.
    pub git_url: String,
    /// The branch (or `refs/...`) written; default: the bundle's ref, `main` for a commit.
    pub git_ref: Option<String>,
    /// `oci://host[:port]/prefix` for charts from OCI registries (`helm push`).
    pub oci: Option<String>,
    /// A directory served as an HTTP chart repository, for charts from HTTP repositories.
    pub chart_dir: Option<PathBuf>,
    /// The registry over plain HTTP.
    pub plain_http: bool,
    /// Basic auth for the registry: user name and a file holding the password.
    pub oci_username: Option<String>,
    pub oci_password_file: Option<PathBuf>,
    /// The helm binary for `helm push`.
    pub helm: PathBuf,
    /// Scratch space (a new temporary directory when `None`).
    pub work_dir: Option<PathBuf>,
}

/// `strata bundle push`: verify the bundle, push its charts, then its commit (last, so an
/// agent at the site never sees a commit whose charts are not there yet). Lines of what was
/// done are written to `out`.
pub async fn push(bundle: &Path, target: PushTarget, out: &mut impl Write) -> Result<Lock> {
    let PushTarget {
        git_url,
        git_ref,
        oci,
        chart_dir,
        plain_http,
        oci_username,
        oci_password_file,
        helm,
        work_dir,
    } = target;
    let redactor = Redactor::new();
    let oci_auth = match (oci_username, oci_password_file) {
        (Some(user), Some(file)) => {
            let password = std::fs::read_to_string(&file).map_err(io(&file))?;
            let password = password.trim_end_matches(['\r', '\n']).to_string();
            redactor.add(password.clone());
            Some((user, password))
        }
        (None, None) => None,
        _ => {
            return Err(Error::Push(
                "give both --oci-username and --oci-password-file, or neither".into(),
            ));
        }
    };
    let work =
        WorkDir::prepare(work_dir.as_deref(), "strata-bundle-push-").map_err(Error::WorkDir)?;
    let opened = open(bundle, &work.path().join("check"))?;
    let lock = &opened.lock;
    // Every chart has a target of its kind, and one archive per name and version there.
    let mut problems = Vec::new();
    let (oci_charts, http_charts): (Vec<&LockedChart>, Vec<&LockedChart>) =
        lock.charts.iter().partition(|c| c.is_oci());
    if !oci_charts.is_empty() && oci.is_none() {
        problems.push(format!(
            "{} chart(s) come from OCI registries ({}): give --oci oci://<site registry>/<prefix>",
            oci_charts.len(),
            oci_charts
                .iter()
                .map(|c| c.label())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !http_charts.is_empty() && chart_dir.is_none() {
        problems.push(format!(
            "{} chart(s) come from HTTP repositories ({}): give --chart-dir <directory served as the site's chart repository>",
            http_charts.len(),
            http_charts.iter().map(|c| c.label()).collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(o) = &oci
        && crate::source::oci::Registry::parse(o, plain_http).is_none()
    {
        problems.push(format!("--oci {o} is not oci://<host>[:port]/<path>"));
    }
    for group in [&oci_charts, &http_charts] {
        let mut by_version: BTreeMap<(&str, &str), &LockedChart> = BTreeMap::new();
        for c in group {
            if let Some(other) = by_version.insert((&c.name, &c.version), c)
                && other.digest != c.digest
            {
                problems.push(format!(
                    "{} and {} differ but would be the same archive at the site",
                    other.label(),
                    c.label()
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Refused {
            path: bundle.to_path_buf(),
            problems,
        });
    }
    if let Some(dir) = &chart_dir {
        write_chart_dir(dir, &http_charts, &opened.entries)?;
        for c in &http_charts {
            writeln!(out, "chart {} {} -> {}", c.name, c.version, dir.display())
                .map_err(io(Path::new("stdout")))?;
        }
    }
    if let Some(oci) = &oci {
        let staged = work.path().join("oci");
        let home = work.path().join("helm");
        for dir in [&staged, &home] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let helm_env = [
            ("HOME", home.clone()),
            ("HELM_CONFIG_HOME", home.join("config")),
            ("HELM_CACHE_HOME", home.join("cache")),
            ("HELM_DATA_HOME", home.join("data")),
        ];
        // Credentials go to helm on stdin, into the scratch helm home only.
        if let Some((user, password)) = &oci_auth {
            let host = oci
                .trim_start_matches("oci://")
                .split('/')
                .next()
                .unwrap_or_default();
            let mut cmd = Command::new(&helm)
                .args([
                    "registry",
                    "login",
                    host,
                    "--username",
                    user,
                    "--password-stdin",
                ])
                .envs(helm_env.clone())
                .stdin(password.clone().into_bytes());
            if plain_http {
                cmd = cmd.arg("--plain-http");
            }
            process::run(&cmd, &redactor)
                .await
                .map_err(|e| Error::Push(format!("helm registry login {host} failed: {e}")))?;
        }
        for c in &oci_charts {
            let file = staged.join(format!("{}-{}.tgz", c.name, c.version));
            std::fs::write(&file, &opened.entries[&c.file]).map_err(io(&file))?;
            let mut cmd = Command::new(&helm)
                .arg("push")
                .arg(&file)
                .arg(oci.trim_end_matches('/'))
                .envs(helm_env.clone());
            if plain_http {
                cmd = cmd.arg("--plain-http");
            }

            process::run(&cmd, &redactor)
                .await
                .map_err(|e| Error::Push(format!("{}: helm push failed: {e}", c.label())))?;
            writeln!(
                out,
                "chart {} {} -> {}/{}:{}",
                c.name,
                c.version,
                oci.trim_end_matches('/'),
                c.name,
                crate::source::oci::version_to_tag(&c.version)
            )
            .map_err(io(Path::new("stdout")))?;
        }
    }
    let branch = git_ref.unwrap_or_else(|| default_branch(&lock.git_ref, &lock.commit));
    let refname = if branch.starts_with("refs/") {
        branch
    } else {
        format!("refs/heads/{branch}")
    };
    push_git(
        &opened.entries[GIT_BUNDLE],
        &lock.commit,
        &git_url,
        &refname,
        work.path(),
        &redactor,
    )
    .await?;
    writeln!(
        out,
        "commit {} -> {} {refname}",
        lock.commit,
        redactor.redact(&without_userinfo(&git_url))
    )
    .map_err(io(Path::new("stdout")))?;
    Ok(opened.lock)
}

/// The branch `push` writes by default: the bundle's ref, `main` when it was the commit's id
/// (full or abbreviated).
pub fn default_branch(git_ref: &str, commit: &str) -> String {
    use crate::source::git::{RefKind, ref_kind};
    let is_commit = match ref_kind(git_ref) {
        RefKind::FullCommit => true,
        RefKind::MaybeShortCommit => commit.starts_with(&git_ref.to_ascii_lowercase()),
        RefKind::Name => git_ref.is_empty(),
    };
    if is_commit {
        "main".into()
    } else {
        git_ref.to_string()
    }
}

/// Copies the charts into `dir` as `<name>-<version>.tgz` and adds them to its index.yaml
/// (written as JSON, which YAML reads), keeping the other entries of an existing index.
fn write_chart_dir(
    dir: &Path,
    charts: &[&LockedChart],
    entries: &BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let index_path = dir.join("index.yaml");
    let mut index: serde_json::Value = match std::fs::read_to_string(&index_path) {
        Ok(text) => serde_saphyr::from_str(&text).map_err(|e| {
            Error::Push(format!(
                "the existing {} cannot be read: {e}; move it away or give another --chart-dir",
                index_path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(io(&index_path)(e)),
    };
    if !index.is_object() {
        index = serde_json::json!({});
    }
    index["apiVersion"] = "v1".into();
    if !index["entries"].is_object() {
        index["entries"] = serde_json::json!({});
    }
    let now = jiff::Timestamp::now().to_string();
    for c in charts {
        let file = format!("{}-{}.tgz", c.name, c.version);
        let path = dir.join(&file);
        let bytes = &entries[&c.file];
        let tmp = dir.join(format!(".{file}.partial"));
        std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        let list = index["entries"]
            .as_object_mut()
            .expect("an object")
            .entry(c.name.clone())
            .or_insert_with(|| serde_json::json!([]));
        if !list.is_array() {
            *list = serde_json::json!([]);
        }
        let list = list.as_array_mut().expect("an array");
        list.retain(|e| e["version"].as_str() != Some(c.version.as_str()));
        list.push(serde_json::json!({
            "apiVersion": "v2",
            "name": c.name,
            "version": c.version,
            "digest": c.digest.trim_start_matches("sha256:"),
            "urls": [file],
            "created": now,
        }));
    }
    index["generated"] = now.into();
    let text = serde_json::to_string_pretty(&index).expect("JSON serialises");
    let tmp = dir.join(".index.yaml.partial");
    std::fs::write(&tmp, text + "\n").map_err(io(&tmp))?;
    std::fs::rename(&tmp, &index_path).map_err(io(&index_path))?;
    Ok(())
}

/// Unbundles the commit into a scratch repository (checking it is the locked one) and
/// pushes it to `url` as `refname` (never forced: a diverged site branch is git's error).
async fn push_git(
    bundle: &[u8],
    commit: &str,
    url: &str,
    refname: &str,
    work: &Path,
    redactor: &Redactor,
) -> Result<()> {
    let repo = work.join("git.git");
    let file = work.join("repository.bundle");
    let home = work.join("git-home");
    std::fs::create_dir_all(&home).map_err(io(&home))?;
    std::fs::write(&file, bundle).map_err(io(&file))?;
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("--git-dir")
            .arg(&repo)
            .args(args)
            .envs([
                ("HOME", home.as_os_str()),
                ("GIT_CONFIG_NOSYSTEM", "1".as_ref()),
                ("GIT_CONFIG_GLOBAL", "/dev/null".as_ref()),
                ("GIT_TERMINAL_PROMPT", "0".as_ref()),
                ("LC_ALL", "C".as_ref()),
            ])
            .inherit_env("SSH_AUTH_SOCK")
            .inherit_env("GIT_SSH_COMMAND")
    };
    let run = |what: &'static str, cmd: Command| async move {
        process::run(&cmd, redactor)
            .await
            .map_err(|e| Error::Push(format!("git {what}: {e}")))
    };
    let init = Command::new("git")
        .args(["init", "--bare", "--quiet"])
        .arg(&repo)
        .env("HOME", &home);
    run("init", init).await?;
    let file_s = file.display().to_string();
    let spec = format!("{BUNDLE_REF}:{BUNDLE_REF}");
    run(
        "fetch from the bundle",
        git(&["fetch", "--quiet", &file_s, &spec]),
    )
    .await?;
    let got = run("rev-parse", git(&["rev-parse", "--verify", BUNDLE_REF]))
        .await?
        .stdout_text();
    if got.trim() != commit {
        return Err(Error::Push(format!(
            "the bundle's Git history holds commit {}, the lock says {commit}",
            got.trim()
        )));
    }
    let spec = format!("{commit}:{refname}");
    run("push", git(&["push", "--quiet", url, &spec])).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(name: &str, bytes: &[u8]) -> LockedChart {
        LockedChart {
            repository: "https://charts.example.com/platform".into(),
            name: name.into(),
            version: "1.0.0".into(),
            digest: sha256(bytes),
            file: format!("charts/{name}-1.0.0.tgz"),
        }
    }

    fn lock(charts: Vec<LockedChart>) -> Lock {
        Lock {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            git_url: "https://git.example.com/platform".into(),
            git_ref: "main".into(),
            profiles_path: "profiles.yaml".into(),
            git_bundle: GIT_BUNDLE.into(),
            charts,
        }
    }

    #[test]
    fn a_lock_round_trips_in_its_json_format() {
        let l = lock(vec![chart("certs", b"a")]);
        let json = serde_json::to_string_pretty(&l).unwrap();
        for field in [
            "\"apiVersion\": \"strata.dev/v1alpha1\"",
            "\"kind\": \"BundleLock\"",
            "\"commit\"",
            "\"profilesPath\": \"profiles.yaml\"",
            "\"gitBundle\": \"git/repository.bundle\"",
            "\"repository\": \"https://charts.example.com/platform\"",
            "\"digest\": \"sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb\"",
        ] {
            assert!(json.contains(field), "{field} in {json}");
        }
        assert_eq!(Lock::parse(json.as_bytes()).unwrap(), l);
    }

    #[test]
    fn every_problem_of_a_lock_is_reported() {
        let mut bad = chart("../x", b"a");
        bad.digest = "md5:00".into();
        bad.file = "../etc/passwd".into();
        bad.repository = "file:///etc".into();
        let mut l = lock(vec![bad, chart("certs", b"a"), chart("certs", b"a")]);
        l.commit = "main".into();
        l.kind = "Other".into();
        let problems = l.problems();
        for needle in [
            "apiVersion/kind",
            "commit \"main\" is not a full commit id",
            "charts[0].repository \"file:///etc\"",
            "charts[0].name \"../x\"",
            "charts[0].digest \"md5:00\"",
            "charts[0].file \"../etc/passwd\"",
            "charts[2]: chart certs 1.0.0 (https://charts.example.com/platform) is listed twice",
            "charts[2].file charts/certs-1.0.0.tgz is listed twice",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle} in {problems:#?}"
            );
        }
        let json = serde_json::to_vec(&l).unwrap();
        assert_eq!(Lock::parse(&json).unwrap_err(), problems);
        let unknown = br#"{"apiVersion":"strata.dev/v1alpha1","kind":"BundleLock","extra":1}"#;
        assert!(Lock::parse(unknown).unwrap_err()[0].contains("unknown field `extra`"));
    }

    #[test]
    fn a_chart_whose_digest_differs_is_refused_naming_it() {
        let c = chart("mesh", b"the archive");
        assert_eq!(verify_chart(&c, Some(b"the archive")), Ok(()));
        let err = verify_chart(&c, Some(b"the archive, changed")).unwrap_err();
        assert!(
            err.starts_with(
                "chart mesh 1.0.0 (https://charts.example.com/platform): digest mismatch"
            ),
            "{err}"
        );
        assert!(err.contains(&c.digest), "{err}");
        let err = verify_chart(&c, None).unwrap_err();
        assert!(
            err.contains("chart mesh 1.0.0") && err.contains("missing"),
            "{err}"
        );
    }

    /// A chart archive whose Chart.yaml says `name` `version`.
    fn tgz(name: &str, version: &str) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        {
            let mut tar = tar::Builder::new(&mut gz);
            let text = format!("apiVersion: v2\nname: {name}\nversion: {version}\n");
            append(&mut tar, &format!("{name}/Chart.yaml"), text.as_bytes()).unwrap();
            tar.finish().unwrap();
        }
        gz.finish().unwrap()
    }

    /// A bundle of `entries` (name, bytes) plus a symlink entry when `link`.
    fn write_bundle(path: &Path, entries: &[(&str, &[u8])], link: bool) {
        let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, bytes) in entries {
            append(&mut tar, name, bytes).unwrap();
        }
        if link {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, "charts/link.tgz", "/etc/passwd")
                .unwrap();
        }
        tar.finish().unwrap();
    }

    #[test]
    fn a_bundle_is_read_whole_and_every_problem_reported() {
        let dir = tempfile::tempdir().unwrap();
        let good = tgz("certs", "1.0.0");
        let liar = tgz("certs", "9.9.9");
        let mut c = chart("certs", &good);
        let mut other = chart("mesh", &liar);
        other.file = "charts/mesh-1.0.0.tgz".into();
        c.file = "charts/certs-1.0.0.tgz".into();
        let l = lock(vec![c.clone(), other.clone()]);
        let lock_json = serde_json::to_vec(&l).unwrap();
        let path = dir.path().join("b.tar");
        write_bundle(
            &path,
            &[
                (LOCK_FILE, &lock_json),
                (GIT_BUNDLE, b"bundle"),
                (&c.file, &good),
                (&other.file, &liar),
            ],
            false,
        );
        // The mesh entry holds a chart named certs 9.9.9: refused, naming it.
        let err = open(&path, &dir.path().join("s"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("1 problem(s)")
                && err.contains("chart mesh 1.0.0 (https://charts.example.com/platform): the archive holds chart certs 9.9.9"),
            "{err}"
        );
        let l = lock(vec![c.clone()]);
        let lock_json = serde_json::to_vec(&l).unwrap();
        write_bundle(
            &path,
            &[
                (LOCK_FILE, &lock_json),
                (GIT_BUNDLE, b"bundle"),
                (&c.file, &good),
            ],
            false,
        );
        let opened = open(&path, &dir.path().join("s")).unwrap();
        assert_eq!(opened.lock, l);
        // An entry the lock does not name, and no Git history.
        write_bundle(
            &path,
            &[(LOCK_FILE, &lock_json), (&c.file, &good), ("extra", b"x")],
            false,
        );
        let err = open(&path, &dir.path().join("s"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("2 problem(s)")
                && err.contains("git/repository.bundle is missing")
                && err.contains("entry extra is not in the lock"),
            "{err}"
        );
        // Links are never followed, not even read.
        write_bundle(
            &path,
            &[
                (LOCK_FILE, &lock_json),
                (GIT_BUNDLE, b"bundle"),
                (&c.file, &good),
            ],
            true,
        );
        let err = open(&path, &dir.path().join("s"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("entry charts/link.tgz is not a regular file"),
            "{err}"
        );
        // Not a bundle at all.
        std::fs::write(&path, b"not a tar").unwrap();
        assert!(open(&path, &dir.path().join("s")).is_err());
    }

    #[test]
    fn push_writes_the_bundles_branch_unless_it_was_a_commit() {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(default_branch("main", commit), "main");
        assert_eq!(default_branch("release-1", commit), "release-1");
        assert_eq!(default_branch(commit, commit), "main");
        assert_eq!(default_branch("0123456", commit), "main");
        assert_eq!(default_branch("cafe", commit), "cafe");
        assert_eq!(
            without_userinfo("https://u:p@git.example.com/x"),
            "https://git.example.com/x"
        );
        assert_eq!(without_userinfo("/srv/git/x"), "/srv/git/x");
    }

    #[test]
    fn a_chart_directory_index_keeps_other_entries_and_is_read_by_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("index.yaml"),
            "apiVersion: v1\nentries:\n  other:\n    - name: other\n      version: 0.1.0\n      urls: [other-0.1.0.tgz]\n",
        )
        .unwrap();
        let c = chart("certs", b"x");
        let entries = BTreeMap::from([(c.file.clone(), b"x".to_vec())]);
        write_chart_dir(dir.path(), &[&c], &entries).unwrap();
        write_chart_dir(dir.path(), &[&c], &entries).unwrap();
        let text = std::fs::read_to_string(dir.path().join("index.yaml")).unwrap();
        let index = strata_core::repoindex::parse("index.yaml", &text).unwrap();
        let certs = strata_core::repoindex::resolve_version(&index, "certs", None).unwrap();
        assert_eq!(certs.version, "1.0.0");
        assert_eq!(certs.digest.as_deref(), Some(&c.digest["sha256:".len()..]));
        assert_eq!(certs.urls, ["certs-1.0.0.tgz"]);
        assert!(strata_core::repoindex::resolve_version(&index, "other", None).is_ok());
        assert_eq!(
            std::fs::read(dir.path().join("certs-1.0.0.tgz")).unwrap(),
            b"x"
        );
    }
}
