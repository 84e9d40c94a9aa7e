//! `strata diff`: what a revision would do to a cluster, before it is applied.
//!
//! The revision is fetched and loaded exactly as `strata plan` (and the agent) load it; the
//! cluster is only read: the releases this agent manages (helm storage Secrets labelled
//! `strata.io/managed-by=strata,strata.io/agent=<namespace>`) and the newest stored record of
//! each planned release. Each release's action is core's [`decide`] on the same
//! [`DesiredRelease`](strata_core::reconcile::DesiredRelease) the agent builds
//! ([`ReleaseJob::desired`]), and removals are core's [`plan_removals`], so the diff and the
//! agent cannot disagree. Nothing is written and no helm process runs.
//!
//! Order of the output is the order the agent runs: removals first (unlayered, then highest
//! layer first), then the revision's layers in order.
//!
//! Exit status ([`run`]'s `Ok` value): 0 nothing would change, 2 something would change
//! (`terraform plan -detailed-exitcode`), 1 the revision has problems (every one printed).

use std::io::Write;

use serde::Serialize;
use strata_core::prune::{Managed, Removals, plan_removals};
use strata_core::reconcile::{Action, Change, UpgradeReason, decide};

use crate::config::{DiffArgs, OutputFormat, WorkDir};
use crate::executor::process::Redactor;
use crate::executor::releases;
use crate::observe::status::{LayerId, ProblemView};
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
    /// The exit status: 1 invalid, 2 changes, 0 nothing to do.
    pub fn exit_code(&self) -> u8 {
        if !self.valid {
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
    }
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
        output,
    } = args;
    let report = diff(
        source.into(),
        kubeconfig.as_deref(),
        context.as_deref(),
        &namespace,
        default_timeout,
        values_diff,
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
    for (layer, jobs) in loaded.layers() {
        for job in jobs {
            let stored = releases::latest(&client, &job.namespace, &job.release).await?;
            report.actions.push(release_entry(
                layer,
                job,
                stored.as_ref(),
                default_timeout,
                values_diff,
            ));
        }
    }
    report.valid = true;
    report.changes = report.actions.iter().any(|e| e.action.changes());
    Ok(report)
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
    writeln!(out, "{}", parts.join(", "))?;
    if !report.changes {
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
