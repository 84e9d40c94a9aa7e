//! The profile list: which profiles (Helm charts) a cluster gets, at which versions, with
//! which values, and how their layers are assigned. See `docs/profile-list.md`.
//!
//! [`parse`] validates the whole document and reports every problem at once. The returned
//! [`ProfileList`] has every default applied (release name, namespace, timeout, layering
//! model), so callers never re-derive them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::drift::{DriftMode, DriftPolicy, IgnoreRule};
use crate::health::{CelExpr, HealthCheck};
use crate::problem::{Problem, Problems};
use crate::types::{GoDuration, LayerNumber, check_dns1123_label, check_repo_path};
use crate::version::VersionConstraint;
use crate::yaml::{self, Ctx, Node, Value, join};

/// The only `apiVersion` accepted.
pub const API_VERSION: &str = "strata.dev/v1alpha1";
/// The `kind` of a profile list.
pub const KIND: &str = "ProfileList";
/// Default of `defaults.timeout`.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// Default of `defaults.namespace`.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Helm's limit on release names.
pub const MAX_RELEASE_NAME: usize = 53;

/// Field names accepted at the top of the document (the JSON Schema lists the same).
pub const TOP_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "layering",
    "repositories",
    "defaults",
    "profiles",
    "prune",
    "allowEmpty",
    "include",
];
/// Field names accepted in `layering`.
pub const LAYERING_FIELDS: &[&str] = &["model", "categories", "allocationFile"];
/// Field names accepted in each `repositories[]` entry.
pub const REPOSITORY_FIELDS: &[&str] = &["name", "url", "secretRef", "certSecretRef", "plainHttp"];
/// Field names accepted in `repositories[].secretRef`.
pub const REPOSITORY_SECRET_REF_FIELDS: &[&str] = &["name"];
/// The keys of a chart repository's credentials Secret.
pub const REPOSITORY_SECRET_KEYS: [&str; 2] = ["username", "password"];
/// The keys of a chart repository's client certificate Secret (the `kubernetes.io/tls`
/// layout): the certificate (chain) and its private key, PEM.
pub const REPOSITORY_CERT_SECRET_KEYS: [&str; 2] = ["tls.crt", "tls.key"];
/// The optional key of a client certificate Secret with CA certificates (PEM) trusted for
/// that repository besides the system's and `--ca-file`.
pub const REPOSITORY_CERT_SECRET_CA_KEY: &str = "ca.crt";
/// Field names accepted in `defaults`.
pub const DEFAULTS_FIELDS: &[&str] = &[
    "timeout",
    "namespace",
    "remediation",
    "healthChecks",
    "drift",
];
/// Field names accepted in each `profiles[]` entry.
pub const PROFILE_FIELDS: &[&str] = &[
    "name",
    "chart",
    "version",
    "releaseName",
    "namespace",
    "values",
    "valuesFiles",
    "valuesFrom",
    "layer",
    "timeout",
    "remediation",
    "dependsOn",
    "healthChecks",
    "enabled",
    "drift",
];
/// Field names accepted in `drift` (in `defaults` and in each profile).
pub const DRIFT_FIELDS: &[&str] = &["mode", "ignore"];
/// Field names accepted in each `drift.ignore[]` entry.
pub const DRIFT_IGNORE_FIELDS: &[&str] = &["kind", "name", "paths"];
/// Field names accepted in each `healthChecks[]` entry (in `defaults` and in each profile).
pub const HEALTH_CHECK_FIELDS: &[&str] = &["apiVersion", "kind", "current", "inProgress", "failed"];
/// Field names accepted in each `profiles[].valuesFrom[]` entry.
pub const VALUES_FROM_FIELDS: &[&str] = &["secretRef", "optional"];
/// Field names accepted in `profiles[].valuesFrom[].secretRef`.
pub const SECRET_REF_FIELDS: &[&str] = &["name", "key", "namespace"];
/// Default of `valuesFrom[].secretRef.key`: the Secret key holding the YAML values.
pub const DEFAULT_VALUES_KEY: &str = "values.yaml";
/// Field names accepted in `remediation` (in `defaults` and in each profile).
pub const REMEDIATION_FIELDS: &[&str] = &["strategy", "retries"];
/// Default of `remediation.retries`: failed attempts before a release is Stalled.
pub const DEFAULT_RETRIES: u32 = 5;
/// Largest `remediation.retries` accepted.
pub const MAX_RETRIES: u32 = 1000;
/// Field names accepted in `profiles[].chart`.
pub const CHART_FIELDS: &[&str] = &["repository", "name", "path"];

/// A validated profile list with every default applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileList {
    /// The file the list was read from (not part of the document).
    #[serde(skip)]
    pub file: String,
    pub api_version: String,
    pub kind: String,
    pub layering: Layering,
    pub repositories: Vec<Repository>,
    pub defaults: Defaults,
    pub profiles: Vec<Profile>,
    /// Uninstall releases strata installed whose profile is gone from the list (default
    /// true); `false` keeps them installed and reports them as orphaned.
    pub prune: bool,
    /// Allow a revision that would uninstall every release strata manages (default false:
    /// such a revision is rejected).
    pub allow_empty: bool,
}

impl ProfileList {
    /// The list's pruning settings.
    pub fn prune_settings(&self) -> crate::prune::Settings {
        crate::prune::Settings {
            prune: self.prune,
            allow_empty: self.allow_empty,
        }
    }

    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repositories.iter().find(|r| r.name == name)
    }
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }
}

/// How layers are assigned (a `layer` on a profile overrides every model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayeringModel {
    /// The chart's own layer annotation (`strata.dev/layer` or `weave.works/layer`).
    #[default]
    Annotation,
    /// The chart's category annotation, mapped to a layer by `layering.categories`.
    Category,
    /// A master list in the Git repository (`layering.allocationFile`) gives every component
    /// (chart name) a unique layer.
    Allocated,
}

impl std::fmt::Display for LayeringModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Annotation => "annotation",
            Self::Category => "category",
            Self::Allocated => "allocated",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Layering {
    pub model: LayeringModel,
    /// Category -> layer (model `category` only; gaps allowed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: BTreeMap<String, LayerNumber>,
    /// Path of the allocation file in the Git repository (model `allocated` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_file: Option<String>,
}

/// A chart repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    pub name: String,
    pub url: String,
    /// A Secret in the agent's namespace with keys `username` and `password`: HTTP basic auth
    /// for this repository.
    #[serde(default, rename = "secretRef", skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<RepositorySecretRef>,
    /// A Secret in the agent's namespace with keys `tls.crt` and `tls.key` (and optionally
    /// `ca.crt`): the client certificate (mTLS) presented to this repository.
    #[serde(
        default,
        rename = "certSecretRef",
        skip_serializing_if = "Option::is_none"
    )]
    pub cert_secret_ref: Option<RepositorySecretRef>,
    /// An `oci://` registry served over plain HTTP (a local or test registry); HTTPS otherwise.
    #[serde(
        default,
        rename = "plainHttp",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub plain_http: bool,
}

/// The credentials Secret of a chart repository (in the agent's namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySecretRef {
    pub name: String,
}

/// The kind of a chart repository, from its URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryKind {
    /// `http://` or `https://`: a classic Helm repository with an `index.yaml`.
    Http,
    /// `oci://host[:port]/path`: an OCI registry (charts pushed with `helm push`).
    Oci,
}

impl Repository {
    /// The kind from the URL scheme; `None` for an unsupported scheme.
    pub fn kind(&self) -> Option<RepositoryKind> {
        repository_kind(&self.url)
    }
}

fn repository_kind(url: &str) -> Option<RepositoryKind> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        Some(RepositoryKind::Http)
    } else if lower.starts_with("oci://") {
        Some(RepositoryKind::Oci)
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub timeout: GoDuration,
    /// Whether the list writes `defaults.timeout` (else `timeout` is the built-in default).
    #[serde(skip)]
    pub timeout_given: Given,
    pub namespace: String,
    /// Remediation of every profile that does not set its own (field by field).
    #[serde(default)]
    pub remediation: Remediation,
    /// Custom health checks of every profile (a profile's own replace these kind by kind).
    #[serde(default, rename = "healthChecks")]
    pub health_checks: Vec<HealthCheck>,
    /// Drift policy of every profile (a profile's own mode replaces it, its ignore rules are
    /// added).
    #[serde(default)]
    pub drift: DriftPolicy,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            timeout: GoDuration::from_secs(DEFAULT_TIMEOUT_SECS),
            timeout_given: Given(false),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            remediation: Remediation::default(),
            health_checks: Vec::new(),
            drift: DriftPolicy::default(),
        }
    }
}

/// What strata does after a failed helm attempt on a release.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RemediationStrategy {
    /// Leave the failed release as it is and try the same install/upgrade again after a backoff.
    #[default]
    Retry,
    /// Roll back to the last deployed revision, then try the upgrade again after a backoff.
    Rollback,
    /// Uninstall the release (destructive: its resources are deleted), then try the install
    /// again after a backoff.
    Uninstall,
}

impl RemediationStrategy {
    /// Every strategy, in documentation order.
    pub const ALL: [RemediationStrategy; 3] = [Self::Retry, Self::Rollback, Self::Uninstall];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Rollback => "rollback",
            Self::Uninstall => "uninstall",
        }
    }

    /// Does the strategy delete resources (only ever run when the profile chose it)?
    pub fn is_destructive(self) -> bool {
        self == Self::Uninstall
    }
}

impl std::fmt::Display for RemediationStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Remediation of one release: the strategy after a failed attempt and the number of failed
/// attempts after which the release is Stalled (terminal until it changes or an operator asks
/// for a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Remediation {
    #[serde(default)]
    pub strategy: RemediationStrategy,
    /// Failed attempts before Stalled; 1..=[`MAX_RETRIES`], default [`DEFAULT_RETRIES`].
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

impl Default for Remediation {
    fn default() -> Self {
        Self {
            strategy: RemediationStrategy::Retry,
            retries: DEFAULT_RETRIES,
        }
    }
}

/// Where a profile's chart comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChartRef {
    /// A chart `name` in the repository called `repository` (see [`ProfileList::repositories`]).
    Repository { repository: String, name: String },
    /// A chart directory inside the Git repository (normalized, relative).
    Path { path: String },
}

impl std::fmt::Display for ChartRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Repository { repository, name } => write!(f, "{repository}/{name}"),
            Self::Path { path } => write!(f, "git:{path}"),
        }
    }
}

/// Whether the list wrote a field that has a default (`true`) or the default was applied.
/// Where a value came from, not the value: two lists that are equal field by field are
/// equal whatever their markers (the serialized form writes every default out, so it would
/// otherwise never parse back equal).
#[derive(Debug, Clone, Copy, Default, Eq)]
pub struct Given(pub bool);

impl PartialEq for Given {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Where each entry of a profile's `dependsOn` was written (1-based line and column; 0 when
/// unknown), for problems found later, at plan time. Not a value: two lists that are equal
/// field by field are equal wherever their entries were written (as with [`Given`]). The
/// second field names the file they were written in when it is not the list's own (a list
/// it includes, [`crate::compose`]).
#[derive(Debug, Clone, Default, Eq)]
pub struct Positions(pub Vec<(u32, u32)>, pub Option<String>);

impl PartialEq for Positions {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Positions {
    /// The position of entry `i`, `(0, 0)` when unknown.
    pub fn get(&self, i: usize) -> (u32, u32) {
        self.0.get(i).copied().unwrap_or((0, 0))
    }

    /// The file the entries were written in: `list_file` unless an included list.
    pub fn file<'a>(&'a self, list_file: &'a str) -> &'a str {
        self.1.as_deref().unwrap_or(list_file)
    }
}

/// One profile with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// Unique in the list; a DNS-1123 label.
    pub name: String,
    pub chart: ChartRef,
    /// Required for repository charts; for path charts, checked against Chart.yaml if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionConstraint>,
    /// Defaults to `name`; DNS-1123 label of at most 53 characters.
    pub release_name: String,
    /// Defaults to `defaults.namespace`; created if missing.
    pub namespace: String,
    /// Inline values, applied after every values file.
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Paths in the Git repository, merged in order.
    pub values_files: Vec<String>,
    /// Kubernetes Secrets holding YAML values, merged in order after the values files and
    /// before the inline values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values_from: Vec<ValuesFrom>,
    /// Overrides every layering model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<LayerNumber>,
    /// Defaults to `defaults.timeout`.
    pub timeout: GoDuration,
    /// Whether the list gives the timeout (the profile's `timeout` or `defaults.timeout`);
    /// when not, `timeout` is the built-in default and the agent uses its own default.
    #[serde(skip)]
    pub timeout_given: Given,
    /// Each field defaults to the one in `defaults.remediation`.
    #[serde(default)]
    pub remediation: Remediation,
    /// Profiles of the same layer that must be Ready before this one starts (names as
    /// written, each once). Checked at plan time against the layers ([`crate::depends`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Where each `depends_on` entry was written.
    #[serde(skip)]
    pub depends_on_at: Positions,
    /// Custom health checks (CEL) for the kinds this release installs: `defaults.healthChecks`
    /// with the profile's own replacing them kind by kind (apiVersion + kind).
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    /// What to do about drift of the release's live objects: `defaults.drift` with the
    /// profile's own `mode` (if given) and its `ignore` rules after those of `defaults`.
    /// Not part of any digest: changing it runs no helm.
    #[serde(default)]
    pub drift: DriftPolicy,
}

/// One `valuesFrom` entry: YAML values read from a key of a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValuesFrom {
    pub secret_ref: SecretRef,
    /// When true, a missing Secret or key is skipped instead of being a problem.
    #[serde(default)]
    pub optional: bool,
}

/// A key of a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// The Secret's name (a DNS-1123 subdomain).
    pub name: String,
    /// The key in the Secret's data; defaults to [`DEFAULT_VALUES_KEY`].
    pub key: String,
    /// The Secret's namespace; `None` means the agent's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Parse and validate a profile list. `file` names the file in problems. A list that
/// includes others needs them: use [`crate::compose::compose`] (here every included file is
/// reported as not found); `enabled: false` profiles are left out.
pub fn parse(file: &str, text: &str) -> Result<ProfileList, Problems> {
    crate::compose::compose_all(
        crate::compose::Root {
            file,
            text,
            first: &[],
        },
        &BTreeMap::new(),
    )
}

/// Validate a merged tree ([`crate::compose`]); nodes name their own files.
pub(crate) fn validate_tree(ctx: &mut Ctx<'_>, root: &Node) -> Option<ProfileList> {
    validate(ctx, root)
}

/// [`parse`] of one document that neither includes nor disables anything.
pub(crate) fn parse_single(file: &str, text: &str) -> Result<ProfileList, Problems> {
    let root = yaml::parse(file, text).map_err(Problems::from)?;
    let mut ctx = Ctx::with_source(file, text);
    let list = validate(&mut ctx, &root);
    match list {
        Some(l) if ctx.problems.is_empty() => Ok(l),
        _ => {
            if ctx.problems.is_empty() {
                ctx.report(Some(&root), "", "the profile list could not be read");
            }
            Err(ctx.problems)
        }
    }
}

fn validate(ctx: &mut Ctx<'_>, root: &Node) -> Option<ProfileList> {
    if root.value == Value::Null {
        ctx.report(
            None,
            "",
            "the file is empty; expected a ProfileList document",
        );
        return None;
    }
    let top = ctx.map(root, "", Some(TOP_FIELDS))?;

    let api_version = ctx
        .required(&top, "apiVersion", "")
        .and_then(|n| ctx.string(n, "apiVersion").map(|s| (n, s)));
    if let Some((n, v)) = &api_version
        && v != API_VERSION
    {
        ctx.report(
            Some(n),
            "apiVersion",
            format!("unsupported apiVersion `{v}`; expected `{API_VERSION}`"),
        );
    }
    let kind = ctx
        .required(&top, "kind", "")
        .and_then(|n| ctx.string(n, "kind").map(|s| (n, s)));
    if let Some((n, k)) = &kind
        && k != KIND
    {
        ctx.report(
            Some(n),
            "kind",
            format!("unexpected kind `{k}`; expected `{KIND}`"),
        );
    }

    let layering = top
        .get("layering")
        .map_or_else(|| Some(Layering::default()), |n| layering(ctx, n));
    let (repositories, repos_ok) = top
        .get("repositories")
        .map_or_else(|| (Vec::new(), true), |n| repositories(ctx, n));
    let defaults = top
        .get("defaults")
        .map_or_else(|| Some(Defaults::default()), |n| defaults(ctx, n));
    let profiles_node = ctx.required(&top, "profiles", "");
    let prune = top
        .get("prune")
        .map_or(Some(true), |n| bool_value(ctx, n, "prune"));
    let allow_empty = top
        .get("allowEmpty")
        .map_or(Some(false), |n| bool_value(ctx, n, "allowEmpty"));

    let (Some(layering), Some(defaults), true) = (layering, defaults.clone(), repos_ok) else {
        // Still validate the profiles so every problem is reported at once.
        if let Some(n) = profiles_node {
            profiles(ctx, n, &repositories, &defaults.unwrap_or_default());
        }
        return None;
    };
    let profiles = profiles(ctx, profiles_node?, &repositories, &defaults)?;
    Some(ProfileList {
        file: ctx.file.to_owned(),
        api_version: api_version?.1,
        kind: kind?.1,
        layering,
        repositories,
        defaults,
        profiles,
        prune: prune?,
        allow_empty: allow_empty?,
    })
}

fn bool_value(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<bool> {
    match &node.value {
        Value::Bool(b) => Some(*b),
        _ => {
            ctx.report(
                Some(node),
                path,
                format!("must be true or false, found {}", node.type_name()),
            );
            None
        }
    }
}

/// A layer written as a number (`10`) or a string (`layer-10`, `"10"`).
pub(crate) fn layer_value(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<LayerNumber> {
    let parsed = match &node.value {
        Value::Int(i) => u32::try_from(*i).ok().map(LayerNumber),
        Value::Str(s) => LayerNumber::parse(s).ok(),
        _ => None,
    };
    if parsed.is_none() {
        let shown = node
            .scalar_text()
            .unwrap_or_else(|| node.type_name().to_owned());
        ctx.report(
            Some(node),
            path,
            format!(
                "`{shown}` is not a layer: write `layer-N` or `N` with N a non-negative integer"
            ),
        );
    }
    parsed
}

fn duration_value(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<GoDuration> {
    let text = match &node.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => {
            ctx.report(
                Some(node),
                path,
                format!("`{i}` has no unit; write a duration like 90s, 5m or 1h30m"),
            );
            return None;
        }
        _ => {
            ctx.report(
                Some(node),
                path,
                format!("must be a duration like 5m, found {}", node.type_name()),
            );
            return None;
        }
    };
    match GoDuration::parse(&text) {
        Ok(d) if d.0.is_zero() => {
            ctx.report(Some(node), path, "must be longer than zero");
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            ctx.report(Some(node), path, e.to_string());
            None
        }
    }
}

fn layering(ctx: &mut Ctx<'_>, node: &Node) -> Option<Layering> {
    let f = ctx.map(node, "layering", Some(LAYERING_FIELDS))?;
    let mut ok = true;
    let model = match f.get("model") {
        None => LayeringModel::Annotation,
        Some(n) => match ctx.string(n, "layering.model").as_deref() {
            Some("annotation") => LayeringModel::Annotation,
            Some("category") => LayeringModel::Category,
            Some("allocated") => LayeringModel::Allocated,
            Some(other) => {
                ctx.report(
                    Some(n),
                    "layering.model",
                    format!(
                        "unknown layering model `{other}`; expected annotation, category or allocated"
                    ),
                );
                return None;
            }
            None => return None,
        },
    };
    let mut categories = BTreeMap::new();
    if let Some(n) = f.get("categories") {
        if model != LayeringModel::Category {
            ctx.report(
                Some(n),
                "layering.categories",
                format!("only used with `model: category` (the model is `{model}`)"),
            );
            ok = false;
        } else if let Some(cf) = ctx.map(n, "layering.categories", None) {
            for (name, _, v) in &cf.entries {
                let path = format!("layering.categories.{name}");
                if name.trim().is_empty() {
                    ctx.report(Some(v), &path, "a category name must not be empty");
                    ok = false;
                    continue;
                }
                match layer_value(ctx, v, &path) {
                    Some(l) => {
                        categories.insert(name.clone(), l);
                    }
                    None => ok = false,
                }
            }
        } else {
            ok = false;
        }
    }
    if model == LayeringModel::Category && categories.is_empty() && ok {
        ctx.report(
            Some(node),
            "layering.categories",
            "model `category` needs a map of categories to layer numbers",
        );
        ok = false;
    }
    let mut allocation_file = None;
    match (f.get("allocationFile"), model) {
        (Some(n), LayeringModel::Allocated) => {
            if let Some(s) = ctx.string(n, "layering.allocationFile") {
                match check_repo_path(&s) {
                    Ok(p) => allocation_file = Some(p),
                    Err(e) => {
                        ctx.report(Some(n), "layering.allocationFile", e.to_string());
                        ok = false;
                    }
                }
            } else {
                ok = false;
            }
        }
        (Some(n), _) => {
            ctx.report(
                Some(n),
                "layering.allocationFile",
                format!("only used with `model: allocated` (the model is `{model}`)"),
            );
            ok = false;
        }
        (None, LayeringModel::Allocated) => {
            ctx.report(
                Some(node),
                "layering.allocationFile",
                "model `allocated` needs the path of the allocation file in the repository",
            );
            ok = false;
        }
        (None, _) => {}
    }
    ok.then_some(Layering {
        model,
        categories,
        allocation_file,
    })
}

/// The repositories that could be read (so profiles can still be checked against their
/// names) and whether all of them were valid.
fn repositories(ctx: &mut Ctx<'_>, node: &Node) -> (Vec<Repository>, bool) {
    let Some(items) = ctx.seq(node, "repositories") else {
        return (Vec::new(), false);
    };
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("repositories[{i}]");
        let Some(f) = ctx.map(item, &path, Some(REPOSITORY_FIELDS)) else {
            ok = false;
            continue;
        };
        let name = ctx
            .required(&f, "name", &path)
            .and_then(|n| ctx.string(n, &join(&path, "name")).map(|s| (n, s)));
        let url = ctx
            .required(&f, "url", &path)
            .and_then(|n| ctx.string(n, &join(&path, "url")).map(|s| (n, s)));
        let (Some((name_node, name)), Some((url_node, url))) = (name, url) else {
            ok = false;
            continue;
        };
        let path = format!("repositories[{name}]");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            ctx.report(
                Some(name_node),
                &join(&path, "name"),
                format!(
                    "`{name}` is not a valid repository name: use letters, digits, '-', '_' and '.'"
                ),
            );
            ok = false;
        }
        if let Some(first) = seen.insert(name.clone(), i) {
            ctx.report(
                Some(name_node),
                &join(&path, "name"),
                format!(
                    "duplicate repository name `{name}`: repositories[{first}] and repositories[{i}] both use it"
                ),
            );
            ok = false;
        }
        match repository_kind(&url) {
            Some(RepositoryKind::Http) => {
                let host = url.split_once("://").map_or("", |(_, r)| r);
                if host.is_empty() || host.starts_with('/') || url.contains(char::is_whitespace) {
                    ctx.report(
                        Some(url_node),
                        &join(&path, "url"),
                        format!("`{url}` is not a valid repository URL"),
                    );
                    ok = false;
                }
            }
            Some(RepositoryKind::Oci) => {
                // oci://host[:port]/path: a registry host, then the repository path.
                let rest = &url["oci://".len()..];
                let (host, repo_path) = rest.split_once('/').unwrap_or((rest, ""));
                if host.is_empty()
                    || url.contains(char::is_whitespace)
                    || url.contains(['?', '#', '@'])
                    || repo_path
                        .split('/')
                        .any(|p| p.is_empty() || p == "." || p == "..")
                        && !repo_path.is_empty()
                {
                    ctx.report(
                        Some(url_node),
                        &join(&path, "url"),
                        format!(
                            "`{url}` is not a valid OCI repository URL: use oci://<registry host>[:port]/<path>"
                        ),
                    );
                    ok = false;
                }
            }
            None => {
                ctx.report(
                    Some(url_node),
                    &join(&path, "url"),
                    format!(
                        "`{url}` is not supported: the URL must start with https:// or http://"
                    ),
                );
                ok = false;
            }
        }
        let mut refs = [None, None];
        for (slot, key) in refs.iter_mut().zip(["secretRef", "certSecretRef"]) {
            *slot = match f.get(key) {
                Some(n) => {
                    let rpath = join(&path, key);
                    let r = ctx
                        .map(n, &rpath, Some(REPOSITORY_SECRET_REF_FIELDS))
                        .and_then(|r| {
                            let n = ctx.required(&r, "name", &rpath)?;
                            let s = ctx.string(n, &join(&rpath, "name"))?;
                            match check_secret_name(&s) {
                                Ok(()) => Some(RepositorySecretRef { name: s }),
                                Err(e) => {
                                    ctx.report(Some(n), &join(&rpath, "name"), e);
                                    None
                                }
                            }
                        });
                    if r.is_none() {
                        ok = false;
                    }
                    r
                }
                None => None,
            };
        }
        let [secret_ref, cert_secret_ref] = refs;
        let plain_http = match f.get("plainHttp") {
            Some(n) => match &n.value {
                Value::Bool(b) => {
                    if *b && repository_kind(&url) != Some(RepositoryKind::Oci) {
                        ctx.report(
                            Some(n),
                            &join(&path, "plainHttp"),
                            "only for oci:// repositories (an http:// URL is plain HTTP already)",
                        );
                        ok = false;
                    }
                    *b
                }
                _ => {
                    ctx.report(
                        Some(n),
                        &join(&path, "plainHttp"),
                        format!("must be true or false, found {}", n.type_name()),
                    );
                    ok = false;
                    false
                }
            },
            None => false,
        };
        out.push(Repository {
            name,
            url,
            secret_ref,
            cert_secret_ref,
            plain_http,
        });
    }
    (out, ok)
}

fn defaults(ctx: &mut Ctx<'_>, node: &Node) -> Option<Defaults> {
    let f = ctx.map(node, "defaults", Some(DEFAULTS_FIELDS))?;
    let mut d = Defaults::default();
    let mut ok = true;
    if let Some(n) = f.get("timeout") {
        match duration_value(ctx, n, "defaults.timeout") {
            Some(t) => {
                d.timeout = t;
                d.timeout_given = Given(true);
            }
            None => ok = false,
        }
    }
    if let Some(n) = f.get("namespace") {
        match ctx.string(n, "defaults.namespace") {
            Some(ns) => {
                if let Err(e) = check_dns1123_label(&ns, 63) {
                    ctx.report(Some(n), "defaults.namespace", e.to_string());
                    ok = false;
                }
                d.namespace = ns;
            }
            None => ok = false,
        }
    }
    if let Some(n) = f.get("remediation") {
        match remediation(ctx, n, "defaults.remediation", Remediation::default()) {
            Some(r) => d.remediation = r,
            None => ok = false,
        }
    }
    if let Some(n) = f.get("healthChecks") {
        match health_checks(ctx, n, "defaults.healthChecks") {
            Some(c) => d.health_checks = c,
            None => ok = false,
        }
    }
    if let Some(n) = f.get("drift") {
        match drift(ctx, n, "defaults.drift", &DriftPolicy::default()) {
            Some(p) => d.drift = p,
            None => ok = false,
        }
    }
    ok.then_some(d)
}

/// `drift` of `defaults` or of a profile: `mode` replaces the one of `base`, `ignore` rules
/// come after those of `base`. Every problem (unknown mode, a path that is not a JSON
/// pointer, a rule without paths) is reported.
fn drift(ctx: &mut Ctx<'_>, node: &Node, path: &str, base: &DriftPolicy) -> Option<DriftPolicy> {
    let f = ctx.map(node, path, Some(DRIFT_FIELDS))?;
    let mut p = base.clone();
    let mut ok = true;
    if let Some(n) = f.get("mode") {
        let mpath = join(path, "mode");
        match ctx.string(n, &mpath) {
            Some(s) => match DriftMode::ALL.iter().find(|m| m.as_str() == s) {
                Some(m) => p.mode = *m,
                None => {
                    ctx.report(
                        Some(n),
                        &mpath,
                        format!("unknown drift mode `{s}`; expected correct, warn or ignore"),
                    );
                    ok = false;
                }
            },
            None => ok = false,
        }
    }
    if let Some(n) = f.get("ignore") {
        let ipath = join(path, "ignore");
        match ctx.seq(n, &ipath) {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let rpath = format!("{ipath}[{i}]");
                    match drift_ignore_rule(ctx, item, &rpath) {
                        Some(r) => p.ignore.push(r),
                        None => ok = false,
                    }
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(p)
}

/// One `drift.ignore[]` rule: `kind`, optional `name`, `paths` (JSON pointers, at least one).
fn drift_ignore_rule(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<IgnoreRule> {
    let f = ctx.map(node, path, Some(DRIFT_IGNORE_FIELDS))?;
    let mut ok = true;
    let kind = ctx.required(&f, "kind", path).and_then(|n| {
        let s = ctx.string(n, &join(path, "kind"))?;
        if s.trim().is_empty() {
            ctx.report(
                Some(n),
                &join(path, "kind"),
                "must not be empty (the kind of the objects, e.g. Deployment)",
            );
            return None;
        }
        Some(s)
    });
    ok &= kind.is_some();
    let name = match f.get("name") {
        Some(n) => {
            let s = ctx.string(n, &join(path, "name"));
            ok &= s.is_some();
            s
        }
        None => None,
    };
    let mut paths = Vec::new();
    if let Some(n) = ctx.required(&f, "paths", path) {
        let ppath = join(path, "paths");
        match ctx.seq(n, &ppath) {
            Some([]) => {
                ctx.report(
                    Some(n),
                    &ppath,
                    "must name at least one field as a JSON pointer, e.g. /spec/replicas",
                );
                ok = false;
            }
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{ppath}[{i}]");
                    let Some(s) = ctx.string(item, &at) else {
                        ok = false;
                        continue;
                    };
                    match crate::drift::check_pointer(&s) {
                        Ok(()) => paths.push(s),
                        Err(e) => {
                            ctx.report(Some(item), &at, e);
                            ok = false;
                        }
                    }
                }
            }
            None => ok = false,
        }
    } else {
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(IgnoreRule {
        kind: kind?,
        name,
        paths,
    })
}

/// `remediation` of `defaults` or of a profile; fields not given come from `base`.
fn remediation(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    base: Remediation,
) -> Option<Remediation> {
    let f = ctx.map(node, path, Some(REMEDIATION_FIELDS))?;
    let mut r = base;
    let mut ok = true;
    if let Some(n) = f.get("strategy") {
        let spath = join(path, "strategy");
        match ctx.string(n, &spath) {
            Some(s) => match RemediationStrategy::ALL.iter().find(|x| x.as_str() == s) {
                Some(x) => r.strategy = *x,
                None => {
                    ctx.report(
                        Some(n),
                        &spath,
                        format!("unknown remediation strategy `{s}`; expected retry, rollback or uninstall"),
                    );
                    ok = false;
                }
            },
            None => ok = false,
        }
    }
    if let Some(n) = f.get("retries") {
        let rpath = join(path, "retries");
        let value = match &n.value {
            Value::Int(i) => Some(*i),
            _ => None,
        };
        match value.and_then(|i| u32::try_from(i).ok()) {
            Some(i) if (1..=MAX_RETRIES).contains(&i) => r.retries = i,
            _ => {
                let shown = n
                    .scalar_text_in(ctx.source_of(n))
                    .unwrap_or_else(|| n.type_name().to_owned());
                ctx.report(
                    Some(n),
                    &rpath,
                    format!(
                        "`{shown}` is not a number of attempts: write a whole number from 1 to {MAX_RETRIES}"
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(r)
}

fn profiles(
    ctx: &mut Ctx<'_>,
    node: &Node,
    repos: &[Repository],
    defaults: &Defaults,
) -> Option<Vec<Profile>> {
    let items = ctx.seq(node, "profiles")?;
    let mut out = Vec::new();
    let mut ok = true;
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut releases: BTreeMap<(String, String), String> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let index_path = format!("profiles[{i}]");
        // Problems are reported as `profiles[<name>]` once the name is known to be usable.
        let peeked = peek_name(item)
            .filter(|n| check_dns1123_label(n, 63).is_ok() && !names.contains_key(n.as_str()));
        let mut path = peeked.map_or_else(|| index_path.clone(), |n| format!("profiles[{n}]"));
        let Some(f) = ctx.map(item, &path, Some(PROFILE_FIELDS)) else {
            ok = false;
            continue;
        };
        let mut name = None;
        if let Some(n) = ctx.required(&f, "name", &index_path)
            && let Some(s) = ctx.string(n, &join(&index_path, "name"))
        {
            if let Err(e) = check_dns1123_label(&s, 63) {
                ctx.report(Some(n), &join(&index_path, "name"), e.to_string());
                ok = false;
            } else if let Some(first) = names.get(&s) {
                ctx.report(
                    Some(n),
                    &join(&index_path, "name"),
                    format!(
                        "duplicate profile name `{s}`: profiles[{first}] and profiles[{i}] both use it"
                    ),
                );
                ok = false;
            } else {
                names.insert(s.clone(), i);
                path = format!("profiles[{s}]");
            }
            name = Some(s);
        }
        let p = profile(ctx, &f, &path, name, repos, defaults);
        let Some(p) = p else {
            ok = false;
            continue;
        };
        let key = (p.namespace.clone(), p.release_name.clone());
        if let Some(other) = releases.get(&key) {
            ctx.report(
                f.get("releaseName").or(Some(item)),
                &join(&path, "releaseName"),
                format!(
                    "release `{}` in namespace `{}` is already used by profile `{other}`; give one of them another releaseName or namespace",
                    key.1, key.0
                ),
            );
            ok = false;
        } else {
            releases.insert(key, p.name.clone());
        }
        out.push(p);
    }
    ok.then_some(out)
}

fn profile(
    ctx: &mut Ctx<'_>,
    f: &yaml::Fields<'_>,
    path: &str,
    name: Option<String>,
    repos: &[Repository],
    defaults: &Defaults,
) -> Option<Profile> {
    let mut ok = name.is_some();

    // chart
    let chart = ctx
        .required(f, "chart", path)
        .and_then(|n| chart_ref(ctx, n, &join(path, "chart"), repos));
    ok &= chart.is_some();

    // version
    let vpath = join(path, "version");
    let version = match f.get("version") {
        None => {
            if let Some(ChartRef::Repository { .. }) = &chart {
                ctx.report(
                    Some(f.node),
                    &vpath,
                    "missing required field `version` (required for charts from a repository; an exact version like 1.2.3 or a range like ~1.2)",
                );
                ok = false;
            }
            None
        }
        Some(n) => {
            let text = match &n.value {
                Value::Str(s) => Some(s.clone()),
                Value::Int(i) => Some(i.to_string()),
                // An unquoted `1.10` is a YAML number: use its spelling, not the float.
                Value::Float(_) => match n.raw(ctx.source_of(n)) {
                    Some(raw) => Some(raw.trim().to_owned()),
                    None => {
                        ctx.report(
                            Some(n),
                            &vpath,
                            format!(
                                "`{}` was read as a number; quote the version",
                                n.scalar_text().unwrap_or_default()
                            ),
                        );
                        None
                    }
                },
                _ => {
                    ctx.report(
                        Some(n),
                        &vpath,
                        format!("must be a version string, found {}", n.type_name()),
                    );
                    None
                }
            };
            match text.map(|t| VersionConstraint::parse(&t)) {
                Some(Ok(c)) => Some(c),
                Some(Err(e)) => {
                    ctx.report(Some(n), &vpath, e.to_string());
                    ok = false;
                    None
                }
                None => {
                    ok = false;
                    None
                }
            }
        }
    };

    // releaseName
    let release_name = match f.get("releaseName") {
        Some(n) => match ctx.string(n, &join(path, "releaseName")) {
            Some(s) => {
                if let Err(e) = check_dns1123_label(&s, MAX_RELEASE_NAME) {
                    ctx.report(Some(n), &join(path, "releaseName"), e.to_string());
                    ok = false;
                }
                Some(s)
            }
            None => {
                ok = false;
                None
            }
        },
        None => {
            if let Some(n) = &name
                && n.len() > MAX_RELEASE_NAME
            {
                ctx.report(
                    Some(f.node),
                    &join(path, "releaseName"),
                    format!(
                        "the profile name is longer than {MAX_RELEASE_NAME} characters, helm's limit for release names; set a shorter releaseName"
                    ),
                );
                ok = false;
            }
            name.clone()
        }
    };

    // namespace
    let namespace = match f.get("namespace") {
        Some(n) => match ctx.string(n, &join(path, "namespace")) {
            Some(s) => {
                if let Err(e) = check_dns1123_label(&s, 63) {
                    ctx.report(Some(n), &join(path, "namespace"), e.to_string());
                    ok = false;
                }
                s
            }
            None => {
                ok = false;
                String::new()
            }
        },
        None => defaults.namespace.clone(),
    };

    // values
    let values = match f.get("values") {
        None => serde_json::Map::new(),
        Some(n) => match n.to_json() {
            serde_json::Value::Object(m) if matches!(n.value, Value::Map(_)) => {
                // Duplicate keys inside values are as confusing as anywhere else.
                yaml::check_duplicate_keys(ctx, n, &join(path, "values"));
                let m = serde_json::Value::Object(m);
                let size = crate::limits::values_size(&m);
                if size > crate::limits::MAX_VALUES_BYTES {
                    ctx.report(
                        Some(n),
                        &join(path, "values"),
                        format!(
                            "the inline values are {} as JSON, over the limit of {}: helm stores values in the release Secret, which Kubernetes limits to 1 MiB; move large data out of the values",
                            crate::limits::human(size),
                            crate::limits::human(crate::limits::MAX_VALUES_BYTES)
                        ),
                    );
                    ok = false;
                }
                match m {
                    serde_json::Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                }
            }
            _ => {
                ctx.report(
                    Some(n),
                    &join(path, "values"),
                    format!("must be a mapping of values, found {}", n.type_name()),
                );
                ok = false;
                serde_json::Map::new()
            }
        },
    };

    // valuesFiles
    let mut values_files = Vec::new();
    if let Some(n) = f.get("valuesFiles") {
        let vf_path = join(path, "valuesFiles");
        if let Some(items) = ctx.seq(n, &vf_path) {
            for (j, item) in items.iter().enumerate() {
                let ip = format!("{vf_path}[{j}]");
                match ctx.string(item, &ip).map(|s| check_repo_path(&s)) {
                    Some(Ok(p)) => values_files.push(p),
                    Some(Err(e)) => {
                        ctx.report(Some(item), &ip, e.to_string());
                        ok = false;
                    }
                    None => ok = false,
                }
            }
        } else {
            ok = false;
        }
    }

    // valuesFrom
    let mut values_from = Vec::new();
    if let Some(n) = f.get("valuesFrom") {
        let vf_path = join(path, "valuesFrom");
        if let Some(items) = ctx.seq(n, &vf_path) {
            for (j, item) in items.iter().enumerate() {
                match values_from_entry(ctx, item, &format!("{vf_path}[{j}]")) {
                    Some(v) => values_from.push(v),
                    None => ok = false,
                }
            }
        } else {
            ok = false;
        }
    }

    // layer
    let layer = match f.get("layer") {
        Some(n) => {
            let l = layer_value(ctx, n, &join(path, "layer"));
            ok &= l.is_some();
            l
        }
        None => None,
    };

    // timeout
    let timeout = match f.get("timeout") {
        Some(n) => {
            let t = duration_value(ctx, n, &join(path, "timeout"));
            ok &= t.is_some();
            t
        }
        None => Some(defaults.timeout),
    };
    let timeout_given = Given(f.get("timeout").is_some() || defaults.timeout_given.0);

    // remediation
    let remediation = match f.get("remediation") {
        Some(n) => {
            let r = remediation(ctx, n, &join(path, "remediation"), defaults.remediation);
            ok &= r.is_some();
            r
        }
        None => Some(defaults.remediation),
    };

    // dependsOn
    let (depends_on, depends_on_at) = match f.get("dependsOn") {
        Some(n) => match depends_on(ctx, n, &join(path, "dependsOn")) {
            Some(d) => d,
            None => {
                ok = false;
                Default::default()
            }
        },
        None => Default::default(),
    };
    // healthChecks
    let health_checks = match f.get("healthChecks") {
        Some(n) => health_checks(ctx, n, &join(path, "healthChecks"))
            .map(|own| crate::health::merge(&defaults.health_checks, &own)),
        None => Some(defaults.health_checks.clone()),
    };
    ok &= health_checks.is_some();
    // drift
    let drift = match f.get("drift") {
        Some(n) => drift(ctx, n, &join(path, "drift"), &defaults.drift),
        None => Some(defaults.drift.clone()),
    };
    ok &= drift.is_some();

    if !ok {
        return None;
    }
    Some(Profile {
        name: name?,
        chart: chart?,
        version,
        release_name: release_name?,
        namespace,
        values,
        values_files,
        values_from,
        layer,
        timeout: timeout?,
        timeout_given,
        remediation: remediation?,
        depends_on,
        depends_on_at,
        health_checks: health_checks?,
        drift: drift?,
    })
}

/// `healthChecks` of `defaults` or of a profile: every expression compiled, every problem
/// (a bad expression with its position) reported.
fn health_checks(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Vec<HealthCheck>> {
    let items = ctx.seq(node, path)?;
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{path}[{i}]");
        let Some(f) = ctx.map(item, &ip, Some(HEALTH_CHECK_FIELDS)) else {
            ok = false;
            continue;
        };
        let text = |ctx: &mut Ctx<'_>, key: &str, what: &str| -> Option<(&Node, String)> {
            let n = ctx.required(&f, key, &ip)?;
            let s = ctx.string(n, &join(&ip, key))?;
            if s.trim().is_empty() {
                ctx.report(
                    Some(n),
                    &join(&ip, key),
                    format!("must not be empty ({what})"),
                );
                return None;
            }
            Some((n, s))
        };
        let api_version = text(
            ctx,
            "apiVersion",
            "the kind's group/version, e.g. cert-manager.io/v1",
        );
        let kind = text(
            ctx,
            "kind",
            "the kind the check applies to, e.g. Certificate",
        );
        let current = ctx
            .required(&f, "current", &ip)
            .and_then(|n| expression(ctx, n, &join(&ip, "current")));
        let mut optional = |key: &str| match f.get(key) {
            None => Some(None),
            Some(n) => expression(ctx, n, &join(&ip, key)).map(Some),
        };
        let in_progress = optional("inProgress");
        let failed = optional("failed");
        let (
            Some((_, api_version)),
            Some((kind_node, kind)),
            Some(current),
            Some(in_progress),
            Some(failed),
        ) = (api_version, kind, current, in_progress, failed)
        else {
            ok = false;
            continue;
        };
        if let Some(first) = seen.insert((api_version.clone(), kind.clone()), i) {
            ctx.report(
                Some(kind_node),
                &ip,
                format!(
                    "duplicate health check for {kind} ({api_version}): {path}[{first}] and {path}[{i}] are both for it; keep one"
                ),
            );
            ok = false;
            continue;
        }
        out.push(HealthCheck {
            api_version,
            kind,
            current,
            in_progress,
            failed,
        });
    }
    ok.then_some(out)
}

/// A CEL expression, compiled; a syntax error is reported at its position in the file when
/// the expression is written on one line (plain or quoted), else at the field.
fn expression(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<CelExpr> {
    let source = ctx.string(node, path)?;
    match CelExpr::compile(&source) {
        Ok(e) => Some(e),
        Err(e) => {
            let (line, column) =
                position_in_file(ctx.source_of(node), node, &source, e.line, e.column);
            ctx.problems.push(
                Problem::new(
                    ctx.file_of(node),
                    path,
                    if source.contains('\n') {
                        format!("invalid CEL expression: {}", e.message)
                    } else {
                        format!("invalid CEL expression `{source}`: {}", e.message)
                    },
                )
                .at(line, column),
            );
            None
        }
    }
}

/// Where line `line`, column `column` of the expression `expr` written at `node` is in the
/// file: exact for an expression on one line written plain or quoted without escapes, the
/// node's own position otherwise.
fn position_in_file(source: &str, node: &Node, expr: &str, line: u32, column: u32) -> (u32, u32) {
    let at_node = (node.line, node.column);
    if line != 1 || column == 0 || expr.contains('\n') {
        return at_node;
    }
    let Some(raw) = node.raw(source) else {
        return at_node;
    };
    let raw = raw.trim_end();
    let quoted = (raw.starts_with('\'') || raw.starts_with('"')) && raw.len() >= 2;
    let skip = match (
        raw == expr,
        quoted && raw.get(1..raw.len() - 1) == Some(expr),
    ) {
        (true, _) => 0,
        (false, true) => 1,
        _ => return at_node,
    };
    (node.line, node.column + skip + column - 1)
}

/// `dependsOn`: a list of profile names, each a DNS-1123 label, each once. Whether they name
/// profiles of the list, of the same layer and without a cycle is checked at plan time, when
/// layers are known ([`crate::depends::check`]).
fn depends_on(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<(Vec<String>, Positions)> {
    let items = ctx.seq(node, path)?;
    let mut names: Vec<String> = Vec::new();
    let mut at = Vec::new();
    let mut ok = true;
    for (j, item) in items.iter().enumerate() {
        let ip = format!("{path}[{j}]");
        let Some(s) = ctx.string(item, &ip) else {
            ok = false;
            continue;
        };
        if let Err(e) = check_dns1123_label(&s, 63) {
            ctx.report(Some(item), &ip, e.to_string());
            ok = false;
        } else if let Some(first) = names.iter().position(|x| *x == s) {
            ctx.report(
                Some(item),
                &ip,
                format!("`{s}` is listed twice ({path}[{first}] and [{j}]); list it once"),
            );
            ok = false;
        } else {
            names.push(s);
            at.push((item.line, item.column));
        }
    }
    let file = ctx.file_of(node);
    let file = (file != ctx.file).then(|| file.to_owned());
    ok.then_some((names, Positions(at, file)))
}

/// A Secret name: a DNS-1123 subdomain (lowercase alphanumeric labels joined by '.').
fn check_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!(
            "`{name}` is not a valid Secret name: it must have 1 to 253 characters"
        ));
    }
    if name
        .split('.')
        .all(|label| check_dns1123_label(label, 63).is_ok())
    {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid Secret name: use lowercase letters, digits, '-' and '.'"
        ))
    }
}

fn values_from_entry(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<ValuesFrom> {
    let f = ctx.map(node, path, Some(VALUES_FROM_FIELDS))?;
    let mut ok = true;
    let optional = match f.get("optional") {
        Some(n) => match &n.value {
            Value::Bool(b) => *b,
            _ => {
                ctx.report(
                    Some(n),
                    &join(path, "optional"),
                    format!("must be true or false, found {}", n.type_name()),
                );
                ok = false;
                false
            }
        },
        None => false,
    };
    let rpath = join(path, "secretRef");
    let r = ctx
        .required(&f, "secretRef", path)
        .and_then(|n| ctx.map(n, &rpath, Some(SECRET_REF_FIELDS)))?;
    let name = ctx.required(&r, "name", &rpath).and_then(|n| {
        let s = ctx.string(n, &join(&rpath, "name"))?;
        match check_secret_name(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                ctx.report(Some(n), &join(&rpath, "name"), e);
                None
            }
        }
    });
    let key = match r.get("key") {
        Some(n) => ctx.string(n, &join(&rpath, "key")).and_then(|s| {
            let valid = !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if valid {
                Some(s)
            } else {
                ctx.report(
                    Some(n),
                    &join(&rpath, "key"),
                    format!(
                        "`{s}` is not a valid Secret key: use letters, digits, '-', '_' and '.'"
                    ),
                );
                None
            }
        }),
        None => Some(DEFAULT_VALUES_KEY.to_string()),
    };
    let namespace = match r.get("namespace") {
        Some(n) => match ctx.string(n, &join(&rpath, "namespace")) {
            Some(s) => match check_dns1123_label(&s, 63) {
                Ok(()) => Some(Some(s)),
                Err(e) => {
                    ctx.report(Some(n), &join(&rpath, "namespace"), e.to_string());
                    None
                }
            },
            None => None,
        },
        None => Some(None),
    };
    if !ok {
        return None;
    }
    Some(ValuesFrom {
        secret_ref: SecretRef {
            name: name?,
            key: key?,
            namespace: namespace?,
        },
        optional,
    })
}

fn peek_name(item: &Node) -> Option<String> {
    match &item.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_str() == Some("name"))
            .and_then(|(_, v)| v.as_str().map(str::to_owned)),
        _ => None,
    }
}

fn chart_ref(ctx: &mut Ctx<'_>, node: &Node, path: &str, repos: &[Repository]) -> Option<ChartRef> {
    let f = ctx.map(node, path, Some(CHART_FIELDS))?;
    let repository = f.get("repository");
    let name = f.get("name");
    let chart_path = f.get("path");
    match (repository, name, chart_path) {
        (Some(_), _, Some(p)) | (_, Some(_), Some(p)) => {
            ctx.report(
                Some(p),
                path,
                "give either `repository` and `name`, or `path`, not both",
            );
            None
        }
        (None, None, None) => {
            ctx.report(
                Some(node),
                path,
                "missing chart source: give `repository` and `name`, or `path`",
            );
            None
        }
        (None, None, Some(p)) => {
            let s = ctx.string(p, &join(path, "path"))?;
            match check_repo_path(&s) {
                Ok(p) => Some(ChartRef::Path { path: p }),
                Err(e) => {
                    ctx.report(Some(p), &join(path, "path"), e.to_string());
                    None
                }
            }
        }
        (r, n, None) => {
            if r.is_none() {
                ctx.report(
                    Some(node),
                    &join(path, "repository"),
                    "missing required field `repository` (the chart repository that holds `name`)",
                );
            }
            if n.is_none() {
                ctx.report(
                    Some(node),
                    &join(path, "name"),
                    "missing required field `name` (the chart's name in the repository)",
                );
            }
            let repo = ctx.string(r?, &join(path, "repository"));
            let chart_name = ctx.string(n?, &join(path, "name"));
            let (repo, chart_name) = (repo?, chart_name?);
            let mut ok = true;
            if chart_name.is_empty() || chart_name.contains(['/', ' ', '\\']) {
                ctx.report(
                    n,
                    &join(path, "name"),
                    format!("`{chart_name}` is not a valid chart name"),
                );
                ok = false;
            }
            if !repos.iter().any(|x| x.name == repo) {
                let mut known: Vec<&str> = repos.iter().map(|x| x.name.as_str()).collect();
                known.dedup();
                ctx.report(
                    r,
                    &join(path, "repository"),
                    if known.is_empty() {
                        format!("unknown repository `{repo}`: no repositories are declared")
                    } else {
                        format!(
                            "unknown repository `{repo}`; declared repositories: {}",
                            known.join(", ")
                        )
                    },
                );
                ok = false;
            }
            ok.then_some(ChartRef::Repository {
                repository: repo,
                name: chart_name,
            })
        }
    }
}

#[cfg(test)]
mod tests;
