//! `strata diff`: what a revision would do to a cluster, before it is applied.
//!
//! The revision is fetched and loaded exactly as `strata plan` (and the agent) load it; the
//! cluster is only read: the releases this agent manages (helm storage Secrets labelled
//! `strata.io/managed-by=strata,strata.io/agent=<namespace>`) and the newest stored record of
//! each planned release. Each release's action is core's [`decide`] on the same
//! [`DesiredRelease`](strata_core::reconcile::DesiredRelease) the agent builds
//! ([`ReleaseJob::desired`]), and removals are core's [`plan_removals`], so the diff and the
//! agent cannot disagree. Nothing is written; no helm process runs unless `--manifests`
//! asks for the rendered manifests (`helm template`, which reads nothing from the cluster).
//!
//! Drift: for a release that would be left alone, the live objects of the manifest helm
//! stored are read ([`ClusterReader::read_all`]) and compared with core's
//! [`strata_core::drift::compare`] under the profile's drift policy (mode `ignore`: not read),
//! as the agent does at each interval. In mode `correct` the drift goes into core's
//! [`decide_with`] as the agent's inputs, which upgrades with reason `drift`; in mode `warn`
//! the release stays unchanged and the drift is listed.
//!
//! `--manifests`: for every release to install or upgrade, `helm template` of the same chart,
//! release, namespace and values (through the one door to helm, [`Helm::template`]) is compared
//! object by object with the manifest of the newest stored record
//! ([`crate::manifest_diff::compare`]). A failed template is reported on the release (exit 1).
//!
//! Order of the output is the order the agent runs: removals first (unlayered, then highest
//! layer first), then the revision's layers in order.
//!
//! Exit status ([`run`]'s `Ok` value): 0 nothing would change, 2 something would change
//! (`terraform plan -detailed-exitcode`), 1 the revision has problems (every one printed).

use std::io::Write;

use serde::Serialize;
use strata_core::drift::{DriftMode, DriftPolicy};
use strata_core::prune::{Managed, Removals, plan_removals};
use strata_core::reconcile::{
    Action, Change, ChangedObject, Inputs, LockState, MissingObject, UpgradeReason, decide,
    decide_with,
};

use crate::config::{DiffArgs, OutputFormat, WorkDir};
use crate::executor::helm::{Helm, HelmConfig, TemplateRequest};
use crate::executor::process::Redactor;
use crate::executor::releases;
use crate::manifest_diff::{ObjectChange, ObjectDiff};
use crate::observe::live::{DriftInput, drift_objects, find_drift};
use crate::observe::objects::{ClusterReader, Found, ObjectRef};
use crate::observe::status::{DriftedObject, LayerId, ProblemView};
use crate::source::revision::{LoadError, Loader, ReleaseJob};

/// Exit status: nothing would change.
pub const EXIT_UNCHANGED: u8 = 0;
/// Exit status: the revision has problems, or the diff could not be made.
pub const EXIT_ERROR: u8 = 1;
/// Exit status: something would change.
pub const EXIT_CHANGES: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot prepare the work dir: {0}")]
    WorkDir(std::io::Error),
    #[error(transparent)]
    Setup(#[from] crate::source::revision::SetupError),
    #[error("{0}")]
    Fetch(#[from] crate::source::git::Error),
    /// `--mirrors-configmap` cannot be read or is invalid.
    #[error("{0}")]
    Mirrors(String),
    #[error("the revision cannot be loaded now: {0}; try again")]
    Unavailable(String),
    #[error("{0}; check --kubeconfig and --context")]
    Kube(#[from] crate::kube_api::Error),
    #[error(transparent)]
    Managed(#[from] releases::ListManagedError),
    #[error(transparent)]
    Release(#[from] releases::Error),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot encode the output: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot run helm for --manifests: {0}; check --helm")]
    Helm(#[from] crate::executor::helm::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What would happen to one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verb {
    /// `helm upgrade --install` of a release helm has no (live) record of.
    Install,
    /// `helm upgrade --install` of an existing release.
    Upgrade,
    /// Nothing: no helm process runs.
    Unchanged,
    /// `helm uninstall --wait`: the profile is gone from the list.
    Remove,
    /// The profile is gone but the list says `prune: false`: kept installed.
    Orphaned,
    /// The agent cannot act on it as it is (e.g. a release left pending); the reason says why.
    Blocked,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Install => "install",
            Verb::Upgrade => "upgrade",
            Verb::Unchanged => "unchanged",
            Verb::Remove => "remove",
            Verb::Orphaned => "orphaned",
            Verb::Blocked => "blocked",
        }
    }

    /// Would the cluster change?
    fn changes(self) -> bool {
        !matches!(self, Verb::Unchanged | Verb::Orphaned)
    }
}

/// One release's line of the diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub layer: LayerId,
    pub release: String,
    pub namespace: String,
    pub profile: String,
    pub action: Verb,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With `--values-diff`, for an upgrade whose values changed: the changed value paths
    /// (JSON pointers; never the values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_values: Option<Vec<String>>,
    /// For a release that would be left alone (or upgraded because of drift in mode
    /// `correct`): its live objects missing or changed (paths only, never values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftedObject>,
    /// With `--manifests`, for an install or upgrade: the objects that change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifests: Option<Vec<ObjectDiff>>,
    /// What could not be found out about this release (a failed `helm template`, live
    /// objects that cannot be read); the exit status is then 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole diff.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub commit: String,
    /// The agent's namespace whose releases were compared.
    pub agent: String,
    pub valid: bool,
    /// Would anything change?
    pub changes: bool,
    /// Every release, in the order the agent would act: removals, then the layers.
    pub actions: Vec<Entry>,
    pub problems: Vec<ProblemView>,
}

impl Report {
    /// The exit status: 1 invalid (or a release's diff failed), 2 changes, 0 nothing to do.
    pub fn exit_code(&self) -> u8 {
        if !self.valid || self.actions.iter().any(|e| e.error.is_some()) {
            EXIT_ERROR
        } else if self.changes {
            EXIT_CHANGES
        } else {
            EXIT_UNCHANGED
        }
    }
}

/// The verb and reason of core's decision.
pub fn classify(action: &Action) -> (Verb, Option<String>) {
    match action {
        Action::NoOp => (Verb::Unchanged, None),
        Action::Install { reason } => (Verb::Install, Some(reason.clone())),
        Action::Upgrade { reason } => (Verb::Upgrade, Some(reason.to_string())),
        other => (Verb::Blocked, Some(other.to_string())),
    }
}

/// Is the action an upgrade because the values changed?
fn values_changed(action: &Action) -> bool {
    matches!(action, Action::Upgrade { reason: UpgradeReason::OutOfSync { changes } } if changes.contains(&Change::Values))
}

/// The removals (and orphans) of a pruning plan as diff entries, in the order they run.
pub fn removal_entries(plan: &Removals) -> Vec<Entry> {
    let entry = |m: &Managed, action: Verb, reason: String| Entry {
        layer: LayerId::of(m.layer),
        release: m.name.clone(),
        namespace: m.namespace.clone(),
        profile: m.profile.clone(),
        action,
        reason: Some(reason),
        changed_values: None,
        drift: Vec::new(),
        manifests: None,
        error: None,
    };
    plan.releases()
        .map(|m| {
            entry(
                m,
                Verb::Remove,
                format!("profile {} is gone from the list", m.profile),
            )
        })
        .chain(plan.orphans.iter().map(|m| {
            entry(
                m,
                Verb::Orphaned,
                format!(
                    "profile {} is gone from the list; kept installed (prune: false)",
                    m.profile
                ),
            )
        }))
        .collect()
}

/// The entry of one planned release: core's decision on what helm stored (`stored`: the
/// newest record, `None` when helm has none).
pub fn release_entry(
    layer: LayerId,
    job: &ReleaseJob,
    stored: Option<&releases::ReleaseRecord>,
    default_timeout: std::time::Duration,
    values_diff: bool,
) -> Entry {
    let observed = stored.map(releases::ReleaseRecord::observed);
    let action = decide(&job.desired(default_timeout), observed.as_ref());
    let (verb, reason) = classify(&action);
    let changed_values = match stored {
        Some(record) if values_diff && values_changed(&action) => Some(
            strata_core::values::changed_paths(&record.config, &job.values),
        ),
        _ => None,
    };
    Entry {
        layer,
        release: job.release.clone(),
        namespace: job.namespace.clone(),
        profile: job.profile.clone(),
        action: verb,
        reason,
        changed_values,
        drift: Vec::new(),
        manifests: None,
        error: None,
    }
}

/// The drifted objects among `objects` as the cluster has them (`found`, in the same order),
/// exactly as the agent finds them ([`crate::observe::live::find_drift`]): missing, or fields
/// the manifest sets changed, minus the policy's ignore rules, with the agent's limit of paths
/// per object.
pub fn drifted(
    policy: &DriftPolicy,
    objects: &[(ObjectRef, serde_json::Value)],
    found: Vec<Found>,
) -> Vec<DriftedObject> {
    let inputs = objects
        .iter()
        .zip(&found)
        .map(|((object, manifest), (namespace, live))| DriftInput {
            object,
            manifest,
            namespace: namespace.clone(),
            live: live.as_ref(),
        });
    find_drift(inputs, policy).objects
}

/// Core's inputs for drift, as the agent gives them in mode `correct`.
pub fn drift_inputs(drift: &[DriftedObject]) -> Inputs {
    let object = |d: &DriftedObject| MissingObject {
        kind: d.kind.clone(),
        namespace: d.namespace.clone(),
        name: d.name.clone(),
    };
    Inputs {
        missing: drift.iter().filter(|d| d.missing).map(object).collect(),
        changed: drift
            .iter()
            .filter(|d| !d.missing)
            .map(|d| ChangedObject {
                object: object(d),
                paths: d.paths.clone(),
            })
            .collect(),
        ..Inputs::new(LockState::HeldByUs, Default::default())
    }
}

/// Record the drift found on an entry that would be left alone; in mode `correct` the action
/// becomes core's decision with the drift as inputs (an upgrade with reason `drift`).
pub fn apply_drift(
    entry: &mut Entry,
    job: &ReleaseJob,
    stored: &releases::ReleaseRecord,
    drift: Vec<DriftedObject>,
    default_timeout: std::time::Duration,
) {
    if job.drift.mode == DriftMode::Correct && !drift.is_empty() {
        let mut inputs = drift_inputs(&drift);
        inputs.remediation = job.remediation;
        let action = decide_with(
            &job.desired(default_timeout),
            Some(&stored.observed()),
            &inputs,
        );
        let (verb, reason) = classify(&action);
        entry.action = verb;
        entry.reason = reason;
    }
    entry.drift = drift;
}

/// Run `strata diff`; returns the exit status (see the module doc).
pub async fn run(args: DiffArgs, out: &mut impl Write) -> Result<u8> {
    let DiffArgs {
        source,
        kubeconfig,
        context,
        namespace,
        default_timeout,
        values_diff,
        manifests,
        helm,
        output,
    } = args;
    let report = diff(
        source.into(),
        kubeconfig.as_deref(),
        context.as_deref(),
        &namespace,
        default_timeout,
        values_diff,
        manifests.then_some(helm.as_path()),
    )
    .await?;
    match output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)?;
        }
        OutputFormat::Text => write_text(out, &report)?,
    }
    Ok(report.exit_code())
}

/// Make the diff (reads only).
async fn diff(
    source: crate::config::SourceConfig,
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
    namespace: &str,
    default_timeout: std::time::Duration,
    values_diff: bool,
    manifests: Option<&std::path::Path>,
) -> Result<Report> {
    let work_dir =
        WorkDir::prepare(source.work_dir.as_deref(), "strata-diff-").map_err(Error::WorkDir)?;
    let client = crate::kube_api::client_in_context(kubeconfig, context).await?;
    let loader = Loader::new(source, work_dir.path(), Redactor::new())
        .await?
        .with_secrets(client.clone(), namespace);
    loader.refresh_mirrors().await.map_err(Error::Mirrors)?;
    let fetched = loader.fetch().await?;
    let cluster = match loader.cluster_name() {
        Some(name) => Some(name.to_string()),
        None if loader.needs_cluster_name() => crate::source::cluster_name::discover(&client).await,
        None => None,
    };
    let mut report = Report {
        commit: fetched.commit.clone(),
        agent: namespace.to_string(),
        valid: false,
        changes: false,
        actions: Vec::new(),
        problems: Vec::new(),
    };
    let loaded = match loader.load(&fetched, cluster.as_deref()).await {
        Ok(loaded) => loaded,
        Err(LoadError::Invalid(problems)) => {
            report.problems = problems;
            return Ok(report);
        }
        Err(LoadError::Unavailable(errors)) => return Err(Error::Unavailable(errors.join("; "))),
    };
    let mut namespaces: Vec<String> = loaded
        .list
        .profiles
        .iter()
        .map(|p| p.namespace.clone())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let managed = releases::list_managed(&client, namespace, &namespaces).await?;
    let removals = match plan_removals(
        &loaded.desired_pairs(),
        &managed,
        loaded.list.prune_settings(),
    ) {
        Ok(plan) => plan,
        Err(empty) => {
            // The agent rejects this revision the same way.
            report.problems.push(ProblemView {
                file: loaded.profiles_path.clone(),
                field: "profiles".into(),
                message: empty.to_string(),
            });
            return Ok(report);
        }
    };
    report.actions = removal_entries(&removals);
    let reader = ClusterReader::new(client.clone());
    let helm = match manifests {
        Some(binary) => Some(
            Helm::new(
                HelmConfig {
                    binary: binary.to_path_buf(),
                    work_dir: work_dir.path().to_path_buf(),
                    kubeconfig: kubeconfig.map(std::path::Path::to_path_buf),
                    kube_context: context.map(str::to_string),
                },
                Redactor::new(),
            )
            .await?,
        ),
        None => None,
    };
    for (layer, jobs) in loaded.layers() {
        for job in jobs {
            let stored = releases::latest(&client, &job.namespace, &job.release).await?;
            let mut entry =
                release_entry(layer, job, stored.as_ref(), default_timeout, values_diff);
            if let Some(record) = &stored
                && entry.action == Verb::Unchanged
                && job.drift.mode != DriftMode::Ignore
            {
                let objects = drift_objects(&record.manifest);
                let refs: Vec<ObjectRef> = objects.iter().map(|(r, _)| r.clone()).collect();
                let found = if refs.is_empty() {
                    Ok(Vec::new())
                } else {
                    reader.read_all(&refs, &job.namespace).await
                };
                match found {
                    Ok(found) => {
                        let drift = drifted(&job.drift, &objects, found);
                        apply_drift(&mut entry, job, record, drift, default_timeout);
                    }
                    Err(e) => {
                        entry.error = Some(format!("cannot read the live objects for drift: {e}"))
                    }
                }
            }
            if let Some(helm) = &helm
                && matches!(entry.action, Verb::Install | Verb::Upgrade)
            {
                match render(helm, job, stored.is_some()).await {
                    Ok(rendered) => {
                        let old = stored
                            .as_ref()
                            .map(|r| releases::manifest_objects(&r.manifest))
                            .unwrap_or_default();
                        entry.manifests = Some(crate::manifest_diff::compare(
                            old,
                            releases::manifest_objects(&rendered),
                            &job.namespace,
                        ));
                    }
                    Err(e) => entry.error = Some(e.to_string()),
                }
            }
            report.actions.push(entry);
        }
    }
    report.valid = true;
    report.changes = report.actions.iter().any(|e| e.action.changes());
    Ok(report)
}

/// `helm template` of the release as the agent would apply it (its merged values file).
async fn render(
    helm: &Helm,
    job: &ReleaseJob,
    is_upgrade: bool,
) -> crate::executor::helm::Result<String> {
    let values_file = helm.write_values(&job.namespace, &job.release, &job.values)?;
    helm.template(&TemplateRequest {
        release: job.release.clone(),
        namespace: job.namespace.clone(),
        chart: job.chart_path.clone(),
        values_file,
        is_upgrade,
    })
    .await
}

/// The lines under a release: drift, manifest changes, error (indented by `pad`).
fn write_details(out: &mut impl Write, e: &Entry, pad: &str) -> std::io::Result<()> {
    for d in &e.drift {
        let object = match &d.namespace {
            Some(ns) => format!("{} {ns}/{}", d.kind, d.name),
            None => format!("{} {}", d.kind, d.name),
        };
        if d.missing {
            writeln!(out, "{pad}drift: {object} missing")?;
        } else {
            let more = if d.more_paths > 0 {
                format!(" and {} more", d.more_paths)
            } else {
                String::new()
            };
            writeln!(out, "{pad}drift: {object} {}{more}", d.paths.join(", "))?;
        }
    }
    if let Some(objects) = &e.manifests {
        if objects.is_empty() {
            writeln!(out, "{pad}manifests: no object changes")?;
        }
        for o in objects {
            let mut head = format!("{pad}{} {}", o.change.sign(), o.object());
            if !o.secret_keys.is_empty() {
                head.push_str(&format!(": {} changed", o.secret_keys.join(", ")));
            }
            if o.kept {
                head.push_str(" (kept by helm: helm.sh/resource-policy: keep)");
            }
            writeln!(out, "{head}")?;
            if o.change == ObjectChange::Changed {
                for l in &o.lines {
                    writeln!(out, "{pad}  {l}")?;
                }
                if o.more_lines > 0 {
                    writeln!(out, "{pad}  ... {} more lines", o.more_lines)?;
                }
            }
        }
    }
    if let Some(err) = &e.error {
        // helm's message may span lines: each under the first.
        writeln!(
            out,
            "{pad}error: {}",
            err.replace('\n', &format!("\n{pad}  "))
        )?;
    }
    Ok(())
}

/// The text for people.
fn write_text(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "revision {} against the releases of agent {}",
        report.commit, report.agent
    )?;
    if !report.valid {
        writeln!(out, "invalid: {} problem(s)", report.problems.len())?;
        for p in &report.problems {
            writeln!(out, "  {p}")?;
        }
        return Ok(());
    }
    let width = report
        .actions
        .iter()
        .map(|e| e.namespace.len() + e.release.len() + 1)
        .max()
        .unwrap_or(0);
    let mut heading: Option<(bool, LayerId)> = None;
    for e in &report.actions {
        let removal = matches!(e.action, Verb::Remove | Verb::Orphaned);
        if heading != Some((removal, e.layer)) {
            if removal {
                writeln!(out, "removals, layer {}", e.layer)?;
            } else {
                writeln!(out, "layer {}", e.layer)?;
            }
            heading = Some((removal, e.layer));
        }
        let name = format!("{}/{}", e.namespace, e.release);
        match &e.reason {
            Some(reason) => writeln!(out, "  {:<10} {name:<width$}  {reason}", e.action.as_str())?,
            None => writeln!(out, "  {:<10} {name}", e.action.as_str())?,
        }
        if let Some(paths) = &e.changed_values {
            writeln!(out, "  {:<10} values changed at: {}", "", paths.join(", "))?;
        }
        write_details(out, e, &format!("  {:<10} ", ""))?;
    }
    let count = |v: Verb| report.actions.iter().filter(|e| e.action == v).count();
    let mut parts = vec![
        format!("{} to install", count(Verb::Install)),
        format!("{} to upgrade", count(Verb::Upgrade)),
        format!("{} to remove", count(Verb::Remove)),
        format!("{} unchanged", count(Verb::Unchanged)),
    ];
    for (v, what) in [(Verb::Orphaned, "orphaned"), (Verb::Blocked, "blocked")] {
        if count(v) > 0 {
            parts.push(format!("{} {what}", count(v)));
        }
    }
    let drifted = report
        .actions
        .iter()
        .filter(|e| !e.drift.is_empty())
        .count();
    if drifted > 0 {
        parts.push(format!("{drifted} with drift"));
    }
    let failed = report.actions.iter().filter(|e| e.error.is_some()).count();
    if failed > 0 {
        parts.push(format!("{failed} failed"));
    }
    writeln!(out, "{}", parts.join(", "))?;
    if !report.changes && drifted > 0 {
        writeln!(
            out,
            "no changes: drift is reported, not corrected (drift mode warn)"
        )?;
    } else if !report.changes {
        writeln!(
            out,
            "no changes: the cluster is what this revision describes"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::prune::Settings;

    fn job(values: serde_json::Value) -> ReleaseJob {
        ReleaseJob {
            profile: "web".into(),
            release: "web".into(),
            namespace: "apps".into(),
            chart_name: "web".into(),
            chart_version: "1.1.0".into(),
            chart_path: "charts/web".into(),
            values_digest: strata_core::values::canonical_digest(&values),
            values,
            chart_digest: "c1".into(),
            layer: Some(2),
            timeout: None,
            remediation: Default::default(),
            health_checks: Vec::new(),
            post_hooks: true,
            drift: Default::default(),
        }
    }

    /// The record strata would have stored after applying `j` (its labels), at `version`
    /// with `config`.
    fn stored(j: &ReleaseJob, version: &str, config: serde_json::Value) -> releases::ReleaseRecord {
        let t = std::time::Duration::from_secs(300);
        releases::ReleaseRecord {
            name: j.release.clone(),
            namespace: j.namespace.clone(),
            revision: 1,
            status: "deployed".into(),
            description: String::new(),
            chart_name: j.chart_name.clone(),
            chart_version: version.into(),
            app_version: None,
            config,
            manifest: String::new(),
            notes: None,
            labels: strata_core::digest::release_labels(
                "strata-system",
                &j.profile,
                j.layer,
                &j.chart_digest,
                &j.content_digest(t),
            ),
        }
    }

    #[test]
    fn entries_follow_core_decisions() {
        let t = std::time::Duration::from_secs(300);
        let values = serde_json::json!({"greeting": "hi", "db": {"password": "s3cret"}});
        let j = job(values.clone());
        let l = LayerId::of(Some(2));
        let e = release_entry(l, &j, None, t, true);
        assert_eq!(e.action, Verb::Install);
        assert_eq!(e.reason.as_deref(), Some("no release in helm's storage"));
        let same = stored(&j, "1.1.0", values.clone());
        let e = release_entry(l, &j, Some(&same), t, true);
        assert_eq!((e.action, e.reason), (Verb::Unchanged, None));
        let older = stored(&j, "1.0.0", values.clone());
        let e = release_entry(l, &j, Some(&older), t, true);
        assert_eq!(e.action, Verb::Upgrade);
        assert_eq!(e.reason.as_deref(), Some("chart version 1.0.0 -> 1.1.0"));
        assert_eq!(e.changed_values, None);
        let other = stored(
            &j,
            "1.1.0",
            serde_json::json!({"greeting": "hi", "db": {"password": "old"}}),
        );
        let e = release_entry(l, &j, Some(&other), t, true);
        assert_eq!(e.reason.as_deref(), Some("values changed"));
        assert_eq!(e.changed_values, Some(vec!["/db/password".to_string()]));
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains("s3cret") && !text.contains("old"), "{text}");
        // Without --values-diff: no paths.
        assert_eq!(
            release_entry(l, &j, Some(&other), t, false).changed_values,
            None
        );
        // Another --default-timeout than the agent's: the helm options differ.
        let e = release_entry(
            l,
            &j,
            Some(&same),
            std::time::Duration::from_secs(60),
            false,
        );
        assert_eq!(e.reason.as_deref(), Some("helm options changed"));
        // A release left pending: blocked, with core's reason.
        let mut pending = same.clone();
        pending.status = "pending-upgrade".into();
        let e = release_entry(l, &j, Some(&pending), t, false);
        assert_eq!(e.action, Verb::Blocked);
        assert!(e.reason.unwrap().contains("helm rollback"));
    }

    #[test]
    fn removals_come_highest_layer_first_and_orphans_do_not_change_anything() {
        let managed = [
            Managed::new("a", "a", Some(1)),
            Managed::new("b", "b", Some(3)),
            Managed::new("keep", "keep", Some(2)),
        ];
        let desired = [("keep".to_string(), "keep".to_string())];
        let plan = plan_removals(&desired, &managed, Settings::default()).unwrap();
        let entries = removal_entries(&plan);
        let order: Vec<_> = entries
            .iter()
            .map(|e| (e.release.as_str(), e.action))
            .collect();
        assert_eq!(order, [("b", Verb::Remove), ("a", Verb::Remove)]);
        let kept = Settings {
            prune: false,
            allow_empty: false,
        };
        let plan = plan_removals(&desired, &managed, kept).unwrap();
        let entries = removal_entries(&plan);
        assert!(entries.iter().all(|e| e.action == Verb::Orphaned));
        assert!(!entries.iter().any(|e| e.action.changes()));
    }

    fn entry(action: Verb) -> Entry {
        Entry {
            layer: LayerId::of(Some(1)),
            release: "web".into(),
            namespace: "apps".into(),
            profile: "web".into(),
            action,
            reason: None,
            changed_values: None,
            drift: Vec::new(),
            manifests: None,
            error: None,
        }
    }

    #[test]
    fn drift_is_listed_and_corrected_only_in_mode_correct() {
        let t = std::time::Duration::from_secs(300);
        let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-data\ndata:\n  greeting: hi\n  other: x\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gone\n---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: hook\n  annotations:\n    helm.sh/hook: post-install\n";
        let objects = drift_objects(manifest);
        assert_eq!(objects.len(), 2, "hooks are not drift");
        let live = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "web-data", "namespace": "apps"},
            "data": {"greeting": "edited by hand", "other": "edited"}});
        let found = || {
            vec![
                (Some("apps".to_string()), Some(live.clone())),
                (Some("apps".to_string()), None),
            ]
        };
        let mut policy = DriftPolicy::default();
        let d = drifted(&policy, &objects, found());
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].paths, ["/data/greeting", "/data/other"]);
        assert!(d[1].missing && d[1].name == "gone");
        policy.ignore.push(strata_core::drift::IgnoreRule {
            kind: "ConfigMap".into(),
            name: Some("web-data".into()),
            paths: vec!["/data/other".into()],
        });
        let d = drifted(&policy, &objects, found());
        assert_eq!(d[0].paths, ["/data/greeting"]);

        let mut j = job(serde_json::json!({}));
        let record = stored(&j, "1.1.0", serde_json::json!({}));
        // warn: listed, left alone.
        let mut e = release_entry(LayerId::of(Some(2)), &j, Some(&record), t, false);
        apply_drift(&mut e, &j, &record, d.clone(), t);
        assert_eq!(e.action, Verb::Unchanged);
        assert_eq!(e.drift.len(), 2);
        // correct: core upgrades with reason drift, as the agent would.
        j.drift.mode = DriftMode::Correct;
        let mut e = release_entry(LayerId::of(Some(2)), &j, Some(&record), t, false);
        apply_drift(&mut e, &j, &record, d, t);
        assert_eq!(e.action, Verb::Upgrade);
        assert_eq!(
            e.reason.as_deref(),
            Some(
                "drift: ConfigMap apps/gone missing; ConfigMap apps/web-data (/data/greeting) changed"
            )
        );
        let mut text = Vec::new();
        write_details(&mut text, &e, "  ").unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(
            text,
            "  drift: ConfigMap apps/web-data /data/greeting\n  drift: ConfigMap apps/gone missing\n"
        );
        assert!(!text.contains("edited"), "{text}");
    }

    #[test]
    fn manifest_changes_are_written_per_object() {
        let cm = |name: &str, v: &str| serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"greeting": v}});
        let secret = |pw: &str| serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"password": pw}});
        let mut e = entry(Verb::Upgrade);
        e.manifests = Some(crate::manifest_diff::compare(
            vec![cm("web-data", "hi"), cm("old", "x"), secret("b2xk")],
            vec![cm("web-data", "hello"), cm("new", "x"), secret("bmV3")],
            "apps",
        ));
        e.error = Some("helm template failed\nUse --debug".into());
        let mut text = Vec::new();
        write_details(&mut text, &e, "  ").unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(
            text,
            "  ~ ConfigMap apps/web-data
    @@ -1,6 +1,6 @@
     apiVersion: v1
     data:
    -  greeting: hi
    +  greeting: hello
     kind: ConfigMap
     metadata:
       name: web-data
  + ConfigMap apps/new
  ~ Secret apps/db: data.password changed
  - ConfigMap apps/old
  error: helm template failed
    Use --debug
"
        );
        assert!(!text.contains("b2xk") && !text.contains("bmV3"), "{text}");
        let r = Report {
            commit: "abc".into(),
            agent: "strata-system".into(),
            valid: true,
            changes: true,
            actions: vec![e],
            problems: Vec::new(),
        };
        assert_eq!(r.exit_code(), EXIT_ERROR, "a failed template is an error");
        let mut e = entry(Verb::Upgrade);
        e.manifests = Some(Vec::new());
        let mut text = Vec::new();
        write_details(&mut text, &e, "").unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "manifests: no object changes\n"
        );
    }

    #[test]
    fn exit_codes_and_text() {
        let mut r = Report {
            commit: "abc".into(),
            agent: "strata-system".into(),
            valid: true,
            changes: false,
            actions: vec![Entry {
                layer: LayerId::of(Some(1)),
                release: "web".into(),
                namespace: "apps".into(),
                profile: "web".into(),
                action: Verb::Unchanged,
                reason: None,
                changed_values: None,
                drift: Vec::new(),
                manifests: None,
                error: None,
            }],
            problems: Vec::new(),
        };
        assert_eq!(r.exit_code(), EXIT_UNCHANGED);
        let mut text = Vec::new();
        write_text(&mut text, &r).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("layer 1\n  unchanged  apps/web\n"), "{text}");
        assert!(text.contains("no changes"), "{text}");
        r.changes = true;
        assert_eq!(r.exit_code(), EXIT_CHANGES);
        r.valid = false;
        assert_eq!(r.exit_code(), EXIT_ERROR);
    }
}
