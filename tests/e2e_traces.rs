//! OpenTelemetry traces end to end: a test OTLP/HTTP receiver (`POST /v1/traces`, protobuf
//! decoded with opentelemetry-proto) gets the span tree revision -> layer -> release -> helm
//! from `strata run --once`, with errors recorded on the failing branch.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use testkit::otlp::Receiver;
use testkit::scenario::layered_profiles;
use testkit::{HelmBin, Scenario, strata_bin};

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            // Debug-recorded strings arrive quoted.
            AnyValue::StringValue(s) => Some(s.trim_matches('"').to_string()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            AnyValue::BoolValue(b) => Some(b.to_string()),
            AnyValue::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        }
    })
}

fn is_error(span: &Span) -> bool {
    span.status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32)
}

fn children<'a>(all: &'a [Span], parent: &Span, name: &str) -> Vec<&'a Span> {
    all.iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.name == name)
        .collect()
}

async fn run_once(s: &Scenario, receiver: &Receiver) -> anyhow::Result<(Option<i32>, String)> {
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), receiver.url()),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "200".to_string()),
    ];
    let mut agent = s.agent(&["--once"], &env)?;
    let exit = tokio::time::timeout(Duration::from_secs(90), agent.child.wait()).await??;
    Ok((exit.code(), agent.logs()))
}

#[tokio::test]
async fn span_tree_revision_layer_release_helm() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{greeting: hi}").await?;
    let (code, logs) = run_once(&s, &receiver).await?;
    assert_eq!(code, Some(0), "{logs}");
    let spans = receiver.spans();
    let names: HashMap<&str, usize> = spans.iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.name.as_str()).or_default() += 1;
        m
    });
    let revision = spans
        .iter()
        .find(|s| s.name == "revision")
        .unwrap_or_else(|| panic!("no revision span; got {names:?}\n{logs}"));
    assert!(
        revision.parent_span_id.is_empty(),
        "revision is a root span"
    );
    assert_eq!(attr(revision, "commit"), Some(s.repo.head()?));
    assert!(!is_error(revision));

    let layers = children(&spans, revision, "layer");
    assert_eq!(
        layers.len(),
        3,
        "three layer spans under the revision: {names:?}"
    );
    let mut layer_numbers: Vec<String> = layers.iter().filter_map(|l| attr(l, "layer")).collect();
    layer_numbers.sort();
    assert_eq!(layer_numbers, ["1", "2", "3"]);
    for layer in &layers {
        let releases = children(&spans, layer, "release");
        assert_eq!(releases.len(), 1, "one release per layer: {names:?}");
        let release = releases[0];
        let helm = children(&spans, release, "helm");
        assert!(
            !helm.is_empty(),
            "a helm span under release {:?}: {names:?}",
            attr(release, "release")
        );
        assert!(helm.iter().all(|h| h.trace_id == revision.trace_id));
        assert!(
            helm.iter()
                .any(|h| attr(h, "cmd").as_deref() == Some("upgrade")),
            "{helm:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn failures_are_recorded_on_spans() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let s = Scenario::start(strata_bin!(), HelmBin::V4, "{failHook: true}").await?;
    // One attempt: the failure stalls mesh and --once gives up (exit 1) after one revision
    // span (with more retries it would apply the revision again on mesh's backoff schedule).
    let profiles = layered_profiles(&s.charts.url(), "{failHook: true}").replace(
        "    timeout: 20s\n",
        "    timeout: 20s\n    remediation: {retries: 1}\n",
    );
    assert!(profiles.contains("retries: 1"));
    s.repo.write("profiles.yaml", profiles)?;
    s.repo.commit("mesh: one attempt")?;
    let (code, logs) = run_once(&s, &receiver).await?;
    assert_eq!(code, Some(1), "{logs}");
    let spans = receiver.spans();
    let revision = spans
        .iter()
        .find(|s| s.name == "revision")
        .expect("revision span");
    assert!(is_error(revision), "revision span records the failure");
    let layers = children(&spans, revision, "layer");
    assert_eq!(layers.len(), 2, "layer 3 never started");
    let failed_layer = layers
        .iter()
        .find(|l| attr(l, "layer").as_deref() == Some("2"))
        .expect("layer 2 span");
    assert!(is_error(failed_layer));
    let release = children(&spans, failed_layer, "release")[0];
    assert!(is_error(release));
    let message = release.status.as_ref().unwrap().message.clone();
    assert!(
        message.contains("post-install"),
        "helm's message on the span: {message}"
    );
    assert!(
        children(&spans, release, "helm")
            .iter()
            .any(|h| is_error(h))
    );
    Ok(())
}
