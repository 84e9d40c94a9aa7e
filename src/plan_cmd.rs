//! `strata plan`: fetch the source at its ref, load the revision exactly as the agent would
//! (profile list, values files, allocation, charts) and print the layers with where each
//! layer number came from — or every problem. No cluster is contacted.
//!
//! Exit: `Ok(true)` valid, `Ok(false)` invalid (problems printed), `Err` the source could not
//! be fetched or the work dir prepared.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use crate::config::{OutputFormat, SourceConfig, WorkDir};
use crate::executor::process::Redactor;
use crate::observe::status::ProblemView;
use crate::source::revision::{LoadError, Loaded, Loader, ReleaseJob};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot prepare the work dir: {0}")]
    WorkDir(std::io::Error),
    #[error(transparent)]
    Setup(#[from] crate::source::revision::SetupError),
    #[error("{0}")]
    Fetch(#[from] crate::source::git::Error),
    #[error("the revision cannot be loaded now: {0}; try again")]
    Unavailable(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot encode the output: {0}")]
    Encode(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output<'a> {
    commit: &'a str,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a strata_core::plan::Plan>,
    /// Who waits for each release's readiness (`namespace/name` -> `strata` or `helm`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    waits: BTreeMap<String, &'static str>,
    problems: &'a [ProblemView],
}

/// Who waits for a release to be ready: helm itself (`--wait`) when the chart may have
/// post-install/post-upgrade hooks (helm runs them after readiness only then), else strata.
fn waiter(job: &ReleaseJob) -> &'static str {
    if job.post_hooks { "helm" } else { "strata" }
}

/// The `wait:` line of a release in the text output.
fn wait_line(job: &ReleaseJob) -> String {
    if job.post_hooks {
        "wait: helm (post-install/post-upgrade hooks)".to_string()
    } else {
        "wait: strata (watches)".to_string()
    }
}

/// Run `strata plan` and write the result to `out`.
pub async fn run(source: SourceConfig, format: OutputFormat, out: &mut impl Write) -> Result<bool> {
    let work_dir =
        WorkDir::prepare(source.work_dir.as_deref(), "strata-plan-").map_err(Error::WorkDir)?;
    let loader = Loader::new(source, work_dir.path(), Redactor::new()).await?;
    let fetched = loader.fetch().await?;
    let result = loader.load(&fetched, loader.cluster_name()).await;
    let (plan, problems) = match &result {
        Ok(loaded) => (Some(loaded), Vec::new()),
        Err(LoadError::Invalid(problems)) => (None, problems.clone()),
        Err(LoadError::Unavailable(errors)) => {
            return Err(Error::Unavailable(errors.join("; ")));
        }
    };
    let valid = plan.is_some();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(
                &mut *out,
                &Output {
                    commit: &fetched.commit,
                    valid,
                    plan: plan.map(|l| &l.plan),
                    waits: plan.map(waits).unwrap_or_default(),
                    problems: &problems,
                },
            )?;
            writeln!(out)?;
        }
        OutputFormat::Text => {
            writeln!(out, "revision {}", fetched.commit)?;
            if let Some(loaded) = plan {
                let mut text = String::new();
                loaded
                    .plan
                    .render(&mut text, |r| loaded.jobs.get(&r.release).map(wait_line))
                    .expect("writing to a String cannot fail");
                write!(out, "{text}")?;
                writeln!(out, "valid: every layer can be planned")?;
            } else {
                writeln!(out, "invalid: {} problem(s)", problems.len())?;
                for p in &problems {
                    writeln!(out, "  {p}")?;
                }
            }
        }
    }
    Ok(valid)
}

/// Who waits for each release of a loaded revision, by `namespace/name`.
fn waits(loaded: &Loaded) -> BTreeMap<String, &'static str> {
    loaded
        .jobs
        .iter()
        .map(|(key, job)| (key.to_string(), waiter(job)))
        .collect()
}
