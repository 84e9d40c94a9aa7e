//! `strata plan`: fetch the source at its ref, load the revision exactly as the agent would
//! (profile list, values files, allocation, charts) and print the layers with where each
//! layer number came from — or every problem. No cluster is contacted.
//!
//! Exit: `Ok(true)` valid, `Ok(false)` invalid (problems printed), `Err` the source could not
//! be fetched or the work dir prepared.

use std::io::Write;

use serde::Serialize;

use crate::config::{OutputFormat, SourceConfig, WorkDir};
use crate::executor::process::Redactor;
use crate::observe::status::ProblemView;
use crate::source::revision::{LoadError, Loader};

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
    problems: &'a [ProblemView],
}

/// Run `strata plan` and write the result to `out`.
pub async fn run(source: SourceConfig, format: OutputFormat, out: &mut impl Write) -> Result<bool> {
    let work_dir =
        WorkDir::prepare(source.work_dir.as_deref(), "strata-plan-").map_err(Error::WorkDir)?;
    let loader = Loader::new(source, work_dir.path(), Redactor::new()).await?;
    let fetched = loader.fetch().await?;
    let result = loader.load(&fetched, loader.cluster_name()).await;
    let (plan, problems) = match &result {
        Ok(loaded) => (Some(&loaded.plan), Vec::new()),
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
                    plan,
                    problems: &problems,
                },
            )?;
            writeln!(out)?;
        }
        OutputFormat::Text => {
            writeln!(out, "revision {}", fetched.commit)?;
            if let Some(plan) = plan {
                write!(out, "{plan}")?;
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
