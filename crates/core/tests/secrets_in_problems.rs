//! Values may hold secrets. Whatever is wrong with a values file (or the inline values of a
//! profile list), the problems name the file, the field and the position, never the value:
//! a sentinel planted in many broken documents never appears in any problem. (Keys are names:
//! they are shown in field paths, so secrets belong in values, not keys.)

use strata_core::{profiles, values};

const SENTINEL: &str = "S3NT1NEL-hunter2";

fn broken_values() -> Vec<String> {
    let s = SENTINEL;
    vec![
        format!("password: \"{s}\n"),
        format!("password: '{s}\n"),
        format!("password: {s}: nested\n"),
        format!("password: [{s}\n"),
        format!("password: {{a: {s}\n"),
        format!("a:\n\tpassword: {s}\n"),
        format!("password: {s}\npassword: {s}\n"),
        format!("password: {s}\n  bad: indent\n"),
        format!("- {s}\n- other\n"),
        format!("{s}\n"),
        format!("password: &a {s}\nother: *b\n"),
        format!("password: !!int {s}\n"),
        format!("password: !!float {s}\n"),
        format!("password: !!bool {s}\n"),
        format!("password: !!binary {s}\n"),
        format!("password: {s}\n---\nmore: {s}\n"),
        format!("password: \"{s}\\q\"\n"),
        format!("? {s}\n: x\n"),
        format!("password: |\n{s}\n"),
        format!("password: \"{s}\x00\"\n"),
        format!("password: {s} # comment\n\"unterminated: x\n"),
        format!("key: %{s}\n"),
        format!("key: @{s}\n"),
        format!("key: `{s}\n"),
    ]
}

#[test]
fn values_problems_never_show_values() {
    let mut rejected = 0;
    for (i, text) in broken_values().iter().enumerate() {
        if let Err(ps) = values::parse_file("values/secret.yaml", text) {
            rejected += 1;
            for p in ps.iter() {
                assert_eq!(p.file, "values/secret.yaml");
                assert!(
                    !p.to_string().contains(SENTINEL) && !p.to_string().contains("hunter2"),
                    "case {i} ({text:?}) shows the value: {p}"
                );
            }
        }
    }
    assert!(
        rejected >= 20,
        "only {rejected} of the broken documents were rejected"
    );
}

#[test]
fn inline_values_problems_never_show_values() {
    let mut rejected = 0;
    for (i, v) in broken_values().iter().enumerate() {
        let inline: String = v.lines().map(|l| format!("      {l}\n")).collect();
        let text = format!(
            "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprofiles:\n  - name: a\n    chart: {{path: charts/a}}\n    values:\n{inline}"
        );
        if let Err(ps) = profiles::parse("profiles.yaml", &text) {
            rejected += 1;
            for p in ps.iter() {
                assert!(
                    !p.to_string().contains(SENTINEL) && !p.to_string().contains("hunter2"),
                    "case {i} ({text:?}) shows the value: {p}"
                );
            }
        }
    }
    assert!(
        rejected >= 20,
        "only {rejected} of the broken lists were rejected"
    );
}
