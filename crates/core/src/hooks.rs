//! Whether a chart may have post-install or post-upgrade hooks, read from its files.
//!
//! helm runs such hooks only after the release is ready when it waits itself (`--wait`), so a
//! chart that may have them keeps helm's wait; any other chart can be installed without it
//! and waited for by strata. The answer is conservative: a false positive only keeps helm's
//! wait, a false negative would run a hook before the release is ready.
//!
//! Read are the files under `templates/` of the chart and of every subchart
//! (`charts/<sub>/templates/`, helpers such as `_helpers.tpl` included) and, because
//! templates often copy annotations from values (`toYaml .Values.jobAnnotations`), the
//! `values.yaml` of the chart and of its subcharts. `crds/`, `README.md` and other files are
//! not read. A file says "may have post hooks" when:
//!
//! - a `helm.sh/hook` key's value names `post-install` or `post-upgrade` (also in a comma
//!   list such as `"pre-install,post-upgrade"`), or cannot be read on its line (empty, a
//!   block scalar, an anchor, a continued list);
//! - a line with `helm.sh/hook` is templated (`{{`): its key or value is computed;
//! - in a template, `post-install` or `post-upgrade` appears anywhere (a value assembled in a
//!   variable or a helper).
//!
//! ```
//! use strata_core::hooks::chart_may_have_post_hooks;
//!
//! let job = "metadata:\n  annotations:\n    helm.sh/hook: pre-install,post-upgrade\n";
//! assert!(chart_may_have_post_hooks([("templates/job.yaml", job.as_bytes())]));
//! let test = "metadata:\n  annotations:\n    \"helm.sh/hook\": test\n";
//! assert!(!chart_may_have_post_hooks([("templates/test.yaml", test.as_bytes())]));
//! ```

/// The annotation helm reads hooks from.
pub const HOOK_KEY: &str = "helm.sh/hook";

/// The hooks helm runs after the release's objects are created (and, with `--wait`, ready).
const POST_HOOKS: [&str; 2] = ["post-install", "post-upgrade"];

/// How a chart file is read for hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScannedFile {
    /// A file under `templates/` of the chart or a subchart (helpers included).
    Template,
    /// `values.yaml` of the chart or a subchart.
    Values,
}

/// How `path` (relative to the chart's directory, `/`-separated, subcharts as
/// `charts/<sub>/...` at any depth) is read for hooks; `None`: not read.
pub fn scanned_file(path: &str) -> Option<ScannedFile> {
    let mut parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    // Leading `charts/<sub>/` pairs lead into a subchart.
    while parts.len() > 2 && parts[0] == "charts" {
        parts.drain(..2);
    }
    match parts.as_slice() {
        ["templates", _, ..] => Some(ScannedFile::Template),
        ["values.yaml"] => Some(ScannedFile::Values),
        _ => None,
    }
}

/// Whether the chart whose files are `files` (path relative to the chart's directory as in
/// [`scanned_file`], content) may have post-install or post-upgrade hooks. Files
/// [`scanned_file`] does not read are ignored.
pub fn chart_may_have_post_hooks<'a, P, C>(files: impl IntoIterator<Item = (P, C)>) -> bool
where
    P: AsRef<str> + 'a,
    C: AsRef<[u8]> + 'a,
{
    files.into_iter().any(|(path, content)| {
        let text = String::from_utf8_lossy(content.as_ref());
        match scanned_file(path.as_ref()) {
            Some(ScannedFile::Template) => template_may_have_post_hooks(&text),
            Some(ScannedFile::Values) => text_may_have_post_hooks(&text),
            None => false,
        }
    })
}

/// Whether a template may make a post-install or post-upgrade hook: [`text_may_have_post_hooks`],
/// or a post hook's name anywhere in it.
pub fn template_may_have_post_hooks(text: &str) -> bool {
    POST_HOOKS.iter().any(|h| text.contains(h)) || text_may_have_post_hooks(text)
}

/// Whether any `helm.sh/hook` key in `text` may name a post hook: its value on the line names
/// one or cannot be read there, or the line is templated.
pub fn text_may_have_post_hooks(text: &str) -> bool {
    text.lines().any(line_may_have_post_hook)
}

/// Whether merged values may add a post hook (templates that copy annotations from values):
/// a `helm.sh/hook` key whose value is not a string without a post hook, or a string value
/// holding such a key (values rendered with `tpl`).
pub fn values_may_add_post_hooks(values: &serde_json::Value) -> bool {
    use serde_json::Value;
    match values {
        Value::Object(map) => map.iter().any(|(k, v)| {
            let hook = k == HOOK_KEY
                && v.as_str()
                    .is_none_or(|s| s.contains("{{") || POST_HOOKS.iter().any(|h| s.contains(h)));
            let templated_key = k.contains(HOOK_KEY) && k.contains("{{");
            hook || templated_key || values_may_add_post_hooks(v)
        }),
        Value::Array(items) => items.iter().any(values_may_add_post_hooks),
        Value::String(s) => text_may_have_post_hooks(s),
        _ => false,
    }
}

/// One line: every `helm.sh/hook` key on it (not `helm.sh/hook-weight` and the like).
fn line_may_have_post_hook(line: &str) -> bool {
    let mut rest = line;
    while let Some(at) = rest.find(HOOK_KEY) {
        let after = &rest[at + HOOK_KEY.len()..];
        let next = after.chars().next();
        if next.is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            // Another key (`helm.sh/hook-weight`, `helm.sh/hook-delete-policy`).
            rest = after;
            continue;
        }
        if line.contains("{{") {
            return true;
        }
        let after = after.trim_start_matches(['"', '\'']).trim_start();
        let Some(value) = after.strip_prefix(':') else {
            // Not a plain `key: value` (a flow mapping split over lines, a comment): unknown.
            return true;
        };
        if value_may_name_post_hook(value) {
            return true;
        }
        rest = after;
    }
    false
}

/// A `helm.sh/hook` value as written after the colon on its line.
fn value_may_name_post_hook(value: &str) -> bool {
    // A comment ends the value (only after whitespace, as in YAML).
    let value = match value.find(" #") {
        Some(i) => &value[..i],
        None => value,
    };
    let value = value.trim();
    if value.ends_with(',') {
        // A list continued on the next line.
        return true;
    }
    // The end of a flow mapping.
    let value = value.trim_end_matches('}').trim_end();
    if POST_HOOKS.iter().any(|h| value.contains(h)) {
        return true;
    }
    let Some(first) = value.chars().next() else {
        // The value is on the next lines.
        return true;
    };
    // Block scalars, anchors, aliases, tags, flow sequences: not read here.
    if matches!(first, '|' | '>' | '&' | '*' | '!' | '[' | '{') {
        return true;
    }
    // A quoted value left open (continued on the next line).
    matches!(first, '"' | '\'') && (value.len() < 2 || !value.ends_with(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(text: &str) -> bool {
        chart_may_have_post_hooks([("templates/job.yaml", text)])
    }

    fn job(hook_line: &str) -> String {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: x\n  annotations:\n    {hook_line}\n    helm.sh/hook-weight: \"-5\"\n    helm.sh/hook-delete-policy: before-hook-creation\nspec: {{}}\n"
        )
    }

    #[test]
    fn hook_values_table() {
        let cases = [
            ("helm.sh/hook: post-install", true),
            ("helm.sh/hook: post-upgrade", true),
            ("helm.sh/hook: \"post-install\"", true),
            ("'helm.sh/hook': 'post-upgrade'", true),
            ("\"helm.sh/hook\": \"pre-install,post-upgrade\"", true),
            ("helm.sh/hook: pre-install, post-install", true),
            ("helm.sh/hook: pre-install", false),
            ("helm.sh/hook: \"pre-install,pre-upgrade\"", false),
            ("helm.sh/hook: pre-delete,post-delete", false),
            ("helm.sh/hook: post-rollback", false),
            ("helm.sh/hook: test", false),
            ("helm.sh/hook: test-success  # helm test", false),
            ("helm.sh/hook: 'test'", false),
            // Templated values or keys.
            ("helm.sh/hook: {{ .Values.hook }}", true),
            ("helm.sh/hook: {{ .Values.hook | quote }}", true),
            ("{{ printf \"%s\" \"helm.sh/hook\" }}: pre-install", true),
            // Values not readable on their line.
            ("helm.sh/hook:", true),
            ("helm.sh/hook: >-", true),
            ("helm.sh/hook: |", true),
            ("helm.sh/hook: *hooks", true),
            ("helm.sh/hook: pre-install,", true),
            ("helm.sh/hook: \"pre-install,", true),
        ];
        for (line, want) in cases {
            assert_eq!(template(&job(line)), want, "{line}");
        }
    }

    #[test]
    fn templates_without_hooks_or_with_other_hook_keys() {
        assert!(!template(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"
        ));
        assert!(!template(
            "metadata:\n  annotations:\n    helm.sh/hook-weight: \"1\"\n    helm.sh/resource-policy: keep\n"
        ));
        assert!(!template(
            "{{- if .Values.enabled }}\nkind: Service\n{{- end }}\n"
        ));
    }

    #[test]
    fn flow_mappings_and_one_line_json() {
        assert!(template(
            "metadata: {annotations: {helm.sh/hook: post-install}}\n"
        ));
        assert!(template(
            "{\"metadata\": {\"annotations\": {\"helm.sh/hook\": \"post-upgrade\"}}}\n"
        ));
        assert!(!template(
            "metadata: {annotations: {\"helm.sh/hook\": \"pre-install\"}}\n"
        ));
    }

    #[test]
    fn a_post_hook_named_anywhere_in_a_template_counts() {
        // The value is assembled in a variable: the key's line is templated anyway, and the
        // hook's name is in the file.
        assert!(template(
            "{{- $when := \"post-install\" }}\nmetadata:\n  annotations:\n    helm.sh/hook: {{ $when }}\n"
        ));
        assert!(template("{{- $when := list \"post-upgrade\" }}\n"));
    }

    #[test]
    fn helpers_count_as_templates() {
        let helper =
            "{{- define \"x.hookAnnotations\" -}}\nhelm.sh/hook: post-install\n{{- end }}\n";
        assert!(chart_may_have_post_hooks([(
            "templates/_helpers.tpl",
            helper
        )]));
        let pre = "{{- define \"x.hook\" -}}\nhelm.sh/hook: pre-install\n{{- end }}\n";
        assert!(!chart_may_have_post_hooks([(
            "templates/_helpers.tpl",
            pre
        )]));
        assert!(chart_may_have_post_hooks([(
            "templates/sub/_hooks.tpl",
            "{{ define \"h\" }}\"helm.sh/hook\": {{ .hook }}{{ end }}\n"
        )]));
    }

    #[test]
    fn subchart_templates_count_at_any_depth() {
        let post = job("helm.sh/hook: post-install");
        for path in [
            "charts/db/templates/job.yaml",
            "charts/db/charts/migrate/templates/job.yaml",
            "charts/db/templates/jobs/job.yaml",
        ] {
            assert!(chart_may_have_post_hooks([(path, post.as_str())]), "{path}");
        }
        let pre = job("helm.sh/hook: pre-install");
        assert!(!chart_may_have_post_hooks([
            ("templates/a.yaml", pre.as_str()),
            ("charts/db/templates/a.yaml", pre.as_str()),
        ]));
    }

    #[test]
    fn only_templates_and_values_files_are_read() {
        let post = job("helm.sh/hook: post-install");
        for path in [
            "crds/job.yaml",
            "README.md",
            "Chart.yaml",
            "files/job.yaml",
            "charts/db/crds/job.yaml",
            "charts/db/README.md",
            "templates",
            "charts/templates",
            "values.schema.json",
        ] {
            assert!(
                !chart_may_have_post_hooks([(path, post.as_str())]),
                "{path}"
            );
        }
        assert_eq!(
            scanned_file("templates/NOTES.txt"),
            Some(ScannedFile::Template)
        );
        assert_eq!(
            scanned_file("./templates/a.yaml"),
            Some(ScannedFile::Template)
        );
        assert_eq!(scanned_file("values.yaml"), Some(ScannedFile::Values));
        assert_eq!(
            scanned_file("charts/db/values.yaml"),
            Some(ScannedFile::Values)
        );
        assert_eq!(scanned_file("charts/values.yaml"), None);
    }

    #[test]
    fn values_files_count_by_their_hook_keys_only() {
        // Templates copy annotations from values (`toYaml .Values.job.annotations`).
        let values = "job:\n  annotations:\n    helm.sh/hook: post-install\n";
        assert!(chart_may_have_post_hooks([("values.yaml", values)]));
        assert!(chart_may_have_post_hooks([(
            "charts/db/values.yaml",
            values
        )]));
        let pre = "job:\n  annotations:\n    \"helm.sh/hook\": pre-install\n";
        assert!(!chart_may_have_post_hooks([("values.yaml", pre)]));
        // A comment naming a post hook is not a hook in values.
        let comment = "# runs the migration (no post-install hook)\nmigrate: true\n";
        assert!(!chart_may_have_post_hooks([("values.yaml", comment)]));
    }

    #[test]
    fn files_that_are_not_utf8_are_read_lossily() {
        let mut bytes = b"\xff\xfe".to_vec();
        bytes.extend_from_slice(b"\nhelm.sh/hook: post-upgrade\n");
        assert!(chart_may_have_post_hooks([("templates/x.yaml", bytes)]));
        assert!(!chart_may_have_post_hooks([(
            "templates/x.yaml",
            vec![0xff_u8; 8]
        )]));
    }

    #[test]
    fn no_files_no_hooks() {
        assert!(!chart_may_have_post_hooks(Vec::<(String, Vec<u8>)>::new()));
    }

    #[test]
    fn merged_values_that_may_add_hooks() {
        assert!(!values_may_add_post_hooks(
            &json!({"replicas": 2, "name": "post"})
        ));
        assert!(values_may_add_post_hooks(
            &json!({"job": {"annotations": {"helm.sh/hook": "post-install"}}})
        ));
        assert!(values_may_add_post_hooks(
            &json!({"jobs": [{"annotations": {"helm.sh/hook": "{{ .Values.when }}"}}]})
        ));
        assert!(values_may_add_post_hooks(
            &json!({"annotations": {"helm.sh/hook": ["post-install"]}})
        ));
        assert!(!values_may_add_post_hooks(
            &json!({"annotations": {"helm.sh/hook": "pre-install", "helm.sh/hook-weight": "1"}})
        ));
        // Manifests given as text, rendered with `tpl`.
        assert!(values_may_add_post_hooks(&json!({
            "extraDeploy": ["kind: Job\nmetadata:\n  annotations:\n    helm.sh/hook: post-upgrade\n"]
        })));
        assert!(!values_may_add_post_hooks(
            &json!({"note": "post-install steps are documented"})
        ));
    }
}
