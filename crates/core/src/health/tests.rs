use serde_json::json;

use super::*;

/// The cert-manager Certificate check of docs/health-checks.md.
fn certificate_check() -> HealthCheck {
    HealthCheck {
        api_version: "cert-manager.io/v1".into(),
        kind: "Certificate".into(),
        current: CelExpr::compile(
            "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')"
                .replace("status.", "self.status.")
                .as_str(),
        )
        .unwrap(),
        in_progress: Some(
            CelExpr::compile("has(self.status.conditions) && self.status.conditions.exists(e, e.type == 'Issuing' && e.status == 'True')").unwrap(),
        ),
        failed: Some(
            CelExpr::compile(
                "self.status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False' && e.reason == 'Failed')",
            )
            .unwrap(),
        ),
    }
}

fn certificate(conditions: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": "identity", "namespace": "linkerd", "generation": 1},
        "spec": {"secretName": "identity"},
        "status": {"conditions": conditions},
    })
}

#[test]
fn ready_true_is_ready() {
    let c = certificate(json!([{"type": "Ready", "status": "True", "reason": "Ready"}]));
    assert_eq!(evaluate(&c, &[certificate_check()]), Some(Readiness::Ready));
}

#[test]
fn ready_false_is_in_progress_naming_the_object_and_the_expression() {
    let c = certificate(json!([{"type": "Ready", "status": "False", "reason": "Pending"}]));
    let Some(Readiness::InProgress { reason }) = evaluate(&c, &[certificate_check()]) else {
        panic!("not in progress");
    };
    assert!(
        reason.starts_with("Certificate linkerd/identity: "),
        "{reason}"
    );
    assert!(reason.contains("is not true yet"), "{reason}");
}

#[test]
fn in_progress_expression_is_named_when_true() {
    let c = certificate(json!([
        {"type": "Ready", "status": "False", "reason": "Pending"},
        {"type": "Issuing", "status": "True"},
    ]));
    let Some(Readiness::InProgress { reason }) = evaluate(&c, &[certificate_check()]) else {
        panic!("not in progress");
    };
    assert!(
        reason.contains("`inProgress: has(self.status.conditions)"),
        "{reason}"
    );
}

#[test]
fn failed_expression_fails_with_its_text() {
    let c = certificate(json!([{"type": "Ready", "status": "False", "reason": "Failed"}]));
    let Some(Readiness::Failed { reason }) = evaluate(&c, &[certificate_check()]) else {
        panic!("not failed");
    };
    assert_eq!(
        reason,
        "Certificate linkerd/identity: health check `failed: self.status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False' && e.reason == 'Failed')` is true"
    );
}

#[test]
fn a_missing_field_is_in_progress_with_the_error_not_a_crash() {
    let mut c = certificate(json!([]));
    c.as_object_mut().unwrap().remove("status");
    let Some(Readiness::InProgress { reason }) = evaluate(&c, &[certificate_check()]) else {
        panic!("not in progress");
    };
    // `current` says why first; `failed` could not be evaluated either, which is said too.
    assert!(
        reason.starts_with(
            "Certificate linkerd/identity: health check `current: self.status.conditions.filter"
        ) && reason
            .contains("` could not be evaluated: No such key: status; health check `failed: "),
        "{reason}"
    );
}

#[test]
fn a_non_boolean_result_is_in_progress() {
    let check = HealthCheck {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        current: CelExpr::compile("self.data.size").unwrap(),
        in_progress: None,
        failed: None,
    };
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"size": "3"}});
    let Some(Readiness::InProgress { reason }) = evaluate(&cm, &[check]) else {
        panic!("not in progress");
    };
    assert!(reason.contains("a string, not true or false"), "{reason}");
}

#[test]
fn other_kinds_and_versions_are_not_matched() {
    let mut c = certificate(json!([]));
    c["apiVersion"] = json!("cert-manager.io/v1alpha2");
    assert_eq!(evaluate(&c, &[certificate_check()]), None);
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
    assert_eq!(evaluate(&d, &[certificate_check()]), None);
    assert_eq!(evaluate(&d, &[]), None);
}

#[test]
fn assess_with_uses_the_check_and_falls_back_to_kstatus() {
    use crate::readiness::{assess, assess_with};
    // kstatus alone says Ready=False is in progress; the check agrees on True.
    let c = certificate(json!([{"type": "Ready", "status": "True"}]));
    assert_eq!(assess_with(&c, &[certificate_check()]), Readiness::Ready);
    // Without status, kstatus says ready at once; the check waits for its condition.
    let mut bare = certificate(json!([]));
    bare.as_object_mut().unwrap().remove("status");
    assert_eq!(assess(&bare), Readiness::Ready);
    assert!(matches!(
        assess_with(&bare, &[certificate_check()]),
        Readiness::InProgress { .. }
    ));
    // Kinds without a check: exactly kstatus.
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 1}, "status": {"replicas": 1, "availableReplicas": 0}});
    assert_eq!(assess_with(&d, &[certificate_check()]), assess(&d));
    // Being deleted wins over the check.
    let mut gone = certificate(json!([{"type": "Ready", "status": "True"}]));
    gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    assert!(matches!(
        assess_with(&gone, &[certificate_check()]),
        Readiness::InProgress { .. }
    ));
}

#[test]
fn a_syntax_error_has_its_position() {
    let e = CelExpr::compile("self.status.conditions.exists(e, e.type == 'Ready' &&)").unwrap_err();
    // The `)` after `&&` is the 54th character.
    assert_eq!((e.line, e.column), (1, 54), "{e:?}");
    assert!(
        e.message
            .starts_with("line 1, column 54: Syntax error: mismatched input ')'"),
        "{e:?}"
    );
    let e = CelExpr::compile("self.status.\n  phase ==").unwrap_err();
    assert_eq!((e.line, e.column), (2, 11), "{e:?}");
    let e = CelExpr::compile("  ").unwrap_err();
    assert_eq!(e.message, "the expression is empty");
}

#[test]
fn merge_overrides_defaults_by_api_version_and_kind() {
    let check = |kind: &str, current: &str| HealthCheck {
        api_version: "example.com/v1".into(),
        kind: kind.into(),
        current: CelExpr::compile(current).unwrap(),
        in_progress: None,
        failed: None,
    };
    let defaults = [check("A", "true"), check("B", "true")];
    let own = [check("B", "false"), check("C", "true")];
    let merged = merge(&defaults, &own);
    let shown: Vec<(String, String)> = merged
        .iter()
        .map(|c| (c.kind.clone(), c.current.to_string()))
        .collect();
    assert_eq!(
        shown,
        [("A", "true"), ("B", "false"), ("C", "true")].map(|(k, e)| (k.to_string(), e.to_string()))
    );
    // Merging again (the serialized form parsed back) changes nothing.
    assert_eq!(merge(&defaults, &merged), merged);
}

#[test]
fn serializes_as_source_and_compiles_when_read_back() {
    let json = serde_json::to_value(certificate_check()).unwrap();
    assert_eq!(json["apiVersion"], "cert-manager.io/v1");
    assert!(json["current"].as_str().unwrap().starts_with("self.status"));
    let back: HealthCheck = serde_json::from_value(json).unwrap();
    assert_eq!(back, certificate_check());
    let bad = json!({"apiVersion": "v1", "kind": "X", "current": "a &&"});
    assert!(serde_json::from_value::<HealthCheck>(bad).is_err());
}

#[test]
fn compiled_checks_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<HealthCheck>();
}

#[test]
fn flux_style_expressions_see_the_top_level_fields() {
    let check = HealthCheck {
        api_version: "cert-manager.io/v1".into(),
        kind: "Certificate".into(),
        current: CelExpr::compile(
            "status.conditions.exists(e, e.type == 'Ready' && e.status == 'True' && e.observedGeneration == metadata.generation)",
        )
        .unwrap(),
        in_progress: None,
        failed: None,
    };
    let c = certificate(json!([{"type": "Ready", "status": "True", "observedGeneration": 1}]));
    assert_eq!(
        evaluate(&c, std::slice::from_ref(&check)),
        Some(Readiness::Ready)
    );
    let stale = certificate(json!([{"type": "Ready", "status": "True", "observedGeneration": 0}]));
    assert!(matches!(
        evaluate(&stale, std::slice::from_ref(&check)),
        Some(Readiness::InProgress { .. })
    ));
    // Without status, `status` is not declared: in progress, with the error.
    let mut bare = certificate(json!([]));
    bare.as_object_mut().unwrap().remove("status");
    let Some(Readiness::InProgress { reason }) = evaluate(&bare, &[check]) else {
        panic!("not in progress");
    };
    assert!(reason.contains("could not be evaluated"), "{reason}");
}

#[test]
fn a_failed_expression_that_cannot_be_evaluated_does_not_hide_current() {
    let mut check = certificate_check();
    check.failed = Some(CelExpr::compile("self.status.failure.count > 0").unwrap());
    let c = certificate(json!([{"type": "Ready", "status": "True"}]));
    assert_eq!(evaluate(&c, &[check]), Some(Readiness::Ready));
}

#[test]
fn gate_fails_on_any_failed_then_waits_on_any_in_progress() {
    let p = |r: &str| Readiness::InProgress { reason: r.into() };
    let f = |r: &str| Readiness::Failed { reason: r.into() };
    assert_eq!(gate(&[]), Gate::Ready);
    assert_eq!(gate(&[Readiness::Ready, Readiness::Ready]), Gate::Ready);
    assert_eq!(
        gate(&[Readiness::Ready, p("a"), p("b")]),
        Gate::Waiting(vec![(1, "a".into()), (2, "b".into())])
    );
    assert_eq!(gate(&[p("a"), f("x"), f("y")]), Gate::Failed("x".into()));
}
#[test]
fn deep_or_long_expressions_are_refused_or_run_without_exhausting_the_stack() {
    // Each within the limits, evaluated from this (2 MiB) test thread: cel runs on its own
    // stack, so none overflows (64 chained additions overflowed 2 MiB before).
    let within = [
        format!(
            "size({}1{}) > 0",
            "[".repeat(MAX_NESTING - 1),
            "]".repeat(MAX_NESTING - 1)
        ),
        format!("{}true{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING)),
        format!("{} > 0", vec!["1"; 500].join(" + ")),
        vec!["true"; 250].join(" && "),
        format!("{}true", "!".repeat(1000)),
        format!("has(self{})", ".a".repeat(900)),
    ];
    for src in &within {
        assert!(src.chars().count() <= MAX_EXPRESSION_CHARS, "{}", src.len());
        let e = CelExpr::compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let check = HealthCheck {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            current: e.clone(),
            in_progress: None,
            failed: None,
        };
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert!(evaluate(&cm, &[check]).is_some());
        let _ = e.eval_bool(&cm);
    }
    // Too deep: refused with the position of the first bracket past the limit.
    let deep = format!(
        "size({}1{}) > 0",
        "[".repeat(MAX_NESTING),
        "]".repeat(MAX_NESTING)
    );
    let e = CelExpr::compile(&deep).unwrap_err();
    assert_eq!((e.line, e.column), (1, 37), "{e:?}");
    assert!(
        e.message.ends_with("nested more than 32 levels deep"),
        "{e:?}"
    );
    // Brackets inside string literals do not count.
    assert!(CelExpr::compile(&format!("'{}' != ''", "(".repeat(100))).is_ok());
    // Too long: refused.
    let long = vec!["true"; 600].join(" && ");
    let e = CelExpr::compile(&long).unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "the expression is {} characters long, over the limit of 2048",
            long.len()
        )
    );
}
