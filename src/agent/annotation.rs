//! Retry by annotation: an operator runs
//!
//! ```text
//! kubectl annotate configmap strata-status -n <agent namespace> \
//!   strata.dev/retry=<namespace>/<release>[,<namespace>/<release>...] --overwrite
//! ```
//!
//! and the agent (the writer, when leader election is on) clears the named releases' backoff
//! and Stalled state ([`ResetReason::Annotation`]), removes the annotation so that it acts once,
//! and starts a cycle at once. The ConfigMap is watched (one watch, no polling).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use crate::kube_api::error_text as kube_error_text;
use crate::observe::report::CONFIGMAP_NAME;
use crate::reconcile::retry::ResetReason;

use crate::reconcile::retry::RetryBook;

/// The annotation on the status ConfigMap that asks for retries.
pub const RETRY_ANNOTATION: &str = "strata.dev/retry";
/// The pause before a failed check of the annotation is repeated.
pub const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "reading the {RETRY_ANNOTATION} annotation of ConfigMap {namespace}/{CONFIGMAP_NAME} failed: {message}; check that the agent may get and patch configmaps in {namespace}"
    )]
    Kube { namespace: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The releases an annotation value names, and the entries that are not `<namespace>/<release>`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Requested {
    pub releases: Vec<(String, String)>,
    pub invalid: Vec<String>,
}

/// Parse `ns/release[,ns/release...]` (spaces around entries allowed, empty entries ignored,
/// duplicates kept once).
pub fn parse(value: &str) -> Requested {
    let mut out = Requested::default();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once('/') {
            Some((ns, rel))
                if !ns.trim().is_empty() && !rel.trim().is_empty() && !rel.contains('/') =>
            {
                let pair = (ns.trim().to_string(), rel.trim().to_string());
                if !out.releases.contains(&pair) {
                    out.releases.push(pair);
                }
            }
            _ => out.invalid.push(entry.to_string()),
        }
    }
    out
}

/// Watches the status ConfigMap until `stop` (one watch, no polling); whenever it carries
/// the annotation, resets the releases it names and wakes the agent loop.
pub async fn watch(
    client: kube::Client,
    namespace: String,
    book: Arc<RetryBook>,
    wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    use futures::StreamExt as _;
    use kube::runtime::WatchStreamExt as _;
    use kube::runtime::watcher;
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let events = watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}")),
    )
    .default_backoff();
    futures::pin_mut!(events);
    let mut warned = false;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = stop.cancelled() => return,
        };
        let annotated = match event {
            None => return,
            Some(Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm))) => cm
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(RETRY_ANNOTATION)),
            Some(Ok(_)) => false,
            Some(Err(e)) => {
                if !warned {
                    tracing::warn!(error = %e, "retry annotation not watched; trying again");
                    warned = true;
                }
                false
            }
        };
        if !annotated {
            continue;
        }
        // Until it is handled: a failed check is repeated after a pause.
        loop {
            match check_once(&api, &namespace, &book).await {
                Ok(n) => {
                    warned = false;
                    if n > 0 {
                        wake.notify_one();
                    }
                    break;
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "retry annotation not checked; trying again");
                        warned = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// One check: reset the releases the annotation names and remove it. Returns how many
/// releases were reset.
pub async fn check_once(api: &Api<ConfigMap>, namespace: &str, book: &RetryBook) -> Result<usize> {
    let err = |e: kube::Error| Error::Kube {
        namespace: namespace.to_string(),
        message: kube_error_text(&e),
    };
    let Some(cm) = api.get_opt(CONFIGMAP_NAME).await.map_err(err)? else {
        return Ok(0);
    };
    let Some(value) = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RETRY_ANNOTATION))
        .cloned()
    else {
        return Ok(0);
    };
    // Remove it first, only if the ConfigMap did not change meanwhile (a new value set after
    // our read is then seen on the next check instead of being lost).
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": cm.metadata.resource_version,
            "annotations": { RETRY_ANNOTATION: null },
        }
    });
    api.patch(
        CONFIGMAP_NAME,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(err)?;
    let requested = parse(&value);
    for entry in &requested.invalid {
        tracing::warn!(
            entry = %entry,
            annotation = RETRY_ANNOTATION,
            "ignored: not <namespace>/<release>"
        );
    }
    let mut reset = 0;
    for (ns, rel) in &requested.releases {
        if book.reset(ns, rel, ResetReason::Annotation) {
            reset += 1;
        } else {
            tracing::warn!(
                release = %rel,
                namespace = %ns,
                annotation = RETRY_ANNOTATION,
                "retry asked for a release that has not run in this agent; nothing to retry"
            );
        }
    }
    Ok(reset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parses_a_list_of_namespace_release_pairs() {
        assert_eq!(
            parse("mesh/mesh, certs/cert-manager,,mesh/mesh "),
            Requested {
                releases: pairs(&[("mesh", "mesh"), ("certs", "cert-manager")]),
                invalid: vec![],
            }
        );
    }

    #[test]
    fn entries_that_are_not_pairs_are_reported() {
        let r = parse("web, /x, ns/, a/b/c, ok/one");
        assert_eq!(r.releases, pairs(&[("ok", "one")]));
        assert_eq!(r.invalid, vec!["web", "/x", "ns/", "a/b/c"]);
        assert_eq!(parse("  "), Requested::default());
    }
}
