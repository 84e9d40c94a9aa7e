//! The layers benchmark (benches/layers.rs) compiled with the tests, so a change that breaks
//! it fails here, and its pure parts checked: the scenario's shape and delays, the profile
//! list and the helmfile it generates, the slowest chart per layer (the bound), the handoffs
//! read from a status, the metric sums. The benchmark itself only runs with `cargo bench -p
//! strata --bench layers`.

use std::time::Duration;

use testkit::agent::metric_sum;

#[allow(dead_code)] // main, the contestants and the world are the benchmark's
#[path = "../benches/layers.rs"]
mod layers;

use layers::{Shape, chart_name, delay_ms, handoffs, helmfile_yaml, profiles_yaml, ratio};

fn shape() -> Shape {
    Shape {
        layers: 3,
        per_layer: 4,
        heavy_every: 5,
        heavy_objects: 50,
        seed: 1,
    }
}

#[test]
fn delays_spread_over_the_range_and_are_fixed_by_the_seed() {
    let all: Vec<u64> = (1..=6)
        .flat_map(|l| (1..=10).map(move |i| delay_ms(1, l, i)))
        .collect();
    assert!(all.iter().all(|d| (200..=2000).contains(d)), "{all:?}");
    assert!(
        all.iter().max().unwrap() - all.iter().min().unwrap() > 1000,
        "{all:?}"
    );
    assert_eq!(delay_ms(1, 2, 3), delay_ms(1, 2, 3));
    assert_ne!(
        (1..=10).map(|i| delay_ms(1, 1, i)).collect::<Vec<_>>(),
        (1..=10).map(|i| delay_ms(2, 1, i)).collect::<Vec<_>>()
    );
}

#[test]
fn the_bound_takes_each_layers_slowest_chart() {
    let s = shape();
    let slowest = s.slowest_per_layer();
    assert_eq!(slowest.len(), 3);
    for (l, name) in slowest.iter().enumerate() {
        let layer = l + 1;
        let max = (1..=4).map(|i| delay_ms(1, layer, i)).max().unwrap();
        let i: usize = name.rsplit('r').next().unwrap().parse().unwrap();
        assert_eq!(name, &chart_name(layer, i));
        assert_eq!(delay_ms(1, layer, i), max);
    }
    assert_eq!(s.releases(), 12);
    assert_eq!(s.objects(3), 2);
    assert_eq!(s.objects(4), 50, "every 5th chart is heavy");
}

#[test]
fn the_profile_list_and_the_helmfile_name_every_chart_in_layer_order() {
    let s = shape();
    let profiles = profiles_yaml(&s, "http://127.0.0.1:1/charts");
    assert_eq!(profiles.matches("  - name: l").count(), 12);
    assert!(profiles.contains("url: http://127.0.0.1:1/charts"));
    let hf = helmfile_yaml(&s, "http://127.0.0.1:1/charts");
    assert_eq!(hf.matches("    chart: bench/").count(), 12);
    // Layer 1 needs nothing; each release of layer 2 needs every release of layer 1.
    let l2 = hf.split("  - name: l2-r1\n").nth(1).unwrap();
    let needs = l2.split("  - name:").next().unwrap();
    for i in 1..=4 {
        assert!(
            needs.contains(&format!("      - l1-r{i}/l1-r{i}\n")),
            "{needs}"
        );
    }
    assert!(
        !hf.split("  - name: l2-r1")
            .next()
            .unwrap()
            .contains("needs:")
    );
}

#[test]
fn handoffs_run_from_a_layers_ready_to_the_next_layers_first_start() {
    let status = serde_json::json!({"layers": [
        {"readyAt": "2026-01-01T00:00:01.000Z", "releases": [{"startedAt": "2026-01-01T00:00:00Z"}]},
        {"readyAt": "2026-01-01T00:00:05.000Z", "releases": [
            {"startedAt": "2026-01-01T00:00:01.250Z"}, {"startedAt": "2026-01-01T00:00:01.004Z"}]},
        {"readyAt": null, "releases": [{"startedAt": "2026-01-01T00:00:05.010Z"}]}
    ]});
    assert_eq!(
        handoffs(&status),
        [Duration::from_millis(4), Duration::from_millis(10)]
    );
}

#[test]
fn metric_sums_filter_by_label_and_ratios_print() {
    let m = "# HELP x\nstrata_helm_command_duration_seconds_count{command=\"upgrade\"} 12\n\
             strata_helm_command_duration_seconds_count{command=\"version\"} 1\n";
    assert_eq!(
        metric_sum(m, "strata_helm_command_duration_seconds_count", ""),
        13.0
    );
    assert_eq!(
        metric_sum(
            m,
            "strata_helm_command_duration_seconds_count",
            "command=\"upgrade\""
        ),
        12.0
    );
    assert_eq!(
        ratio(Duration::from_secs(3), Duration::from_secs(2)),
        "1.50x"
    );
}
