//! The fault benchmark (benches/faults.rs) compiled with the tests, so a change that breaks it
//! fails here, and its pure parts checked: the modes and targets, the ratios and the verdict
//! of a table row, the metric sums. The benchmark itself only runs with `cargo bench -p strata
//! --bench faults`.

use std::time::Duration;

#[allow(dead_code)] // main, the runs and the world are the benchmark's, not this test's
#[path = "../benches/faults.rs"]
mod faults;

use faults::{Mode, Run, baseline_of, modes, row};
use testkit::agent::metric_sum;

#[test]
fn modes_are_two_baselines_and_eight_faults_with_targets() {
    let m = modes();
    assert_eq!(m.len(), 10);
    for (base, jitter) in [(&m[0], false), (&m[1], true)] {
        assert_eq!((base.error, base.target, base.jitter), (None, None, jitter));
        assert_eq!(baseline_of(base), base.name);
    }
    for mode in &m[2..] {
        let base = m.iter().find(|b| b.name == baseline_of(mode)).unwrap();
        assert_eq!(base.jitter, mode.jitter, "{}", mode.name);
    }
    let target = |name: &str| m.iter().find(|x| x.name == name).and_then(|x| x.target);
    assert_eq!(target("1% 500"), Some(2.0));
    assert_eq!(target("3% 500 +jitter"), Some(3.0));
    assert_eq!(target("10% 500"), Some(6.0));
    assert_eq!(target("10% 429 +jitter"), Some(6.0));
}

#[test]
fn a_row_passes_within_its_target_and_fails_on_a_bad_run() {
    let mode = Mode {
        name: "1% 500".into(),
        error: Some((500, 0.01)),
        jitter: false,
        target: Some(2.0),
    };
    let ok = |secs| Run {
        converged: true,
        time: Duration::from_secs(secs),
        ..Run::default()
    };
    let base = Duration::from_secs(10);
    let r = row(&mode, &[ok(12), ok(15), ok(30)], base);
    assert!((r.median_ratio - 1.5).abs() < 1e-9, "{r:?}");
    assert!((r.max_ratio - 3.0).abs() < 1e-9, "{r:?}");
    assert_eq!(r.pass, Some(true));
    assert_eq!(row(&mode, &[ok(25)], base).pass, Some(false), "2.5x > 2x");
    let stalled = Run {
        stalled: true,
        ..ok(11)
    };
    assert_eq!(row(&mode, &[ok(11), stalled], base).pass, Some(false));
    let lost = Run {
        converged: false,
        ..Run::default()
    };
    assert_eq!(row(&mode, &[lost], base).pass, Some(false));
}

#[test]
fn metric_sums_add_every_sample_of_a_family() {
    let text = "# HELP strata_remediations_total x\n\
                strata_remediations_total{kind=\"remediate-rollback\",outcome=\"succeeded\"} 1\n\
                strata_remediations_total{kind=\"remediate-uninstall\",outcome=\"failed\"} 2\n\
                strata_release_failures_total 3\n\
                strata_release_failures_total_other 9\n";
    assert_eq!(metric_sum(text, "strata_remediations_total", ""), 3.0);
    assert_eq!(metric_sum(text, "strata_release_failures_total", ""), 3.0);
    assert_eq!(metric_sum(text, "strata_transient_retries_total", ""), 0.0);
}
