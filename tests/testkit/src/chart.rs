//! Profile chart directories written by a test: Chart.yaml with strata's annotations and the
//! templates the test names, plus the small templates several tests share.

use std::path::{Path, PathBuf};

/// A chart template: a ConfigMap whose `greeting` comes from the values (default "hello").
pub const CONFIGMAP_TEMPLATE: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  greeting: {{ .Values.greeting | default "hello" | quote }}
"#;

/// A chart template: a post-install/post-upgrade hook Job that fails (kubesim's `fail`
/// annotation) when `failHook` is set.
pub const FAIL_HOOK_TEMPLATE: &str = r#"{{- if .Values.failHook }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-check
  annotations:
    helm.sh/hook: post-install,post-upgrade
    helm.sh/hook-delete-policy: before-hook-creation
    kubesim.strata.dev/fail: "true"
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: check
          image: example.com/check:1
{{- end }}
"#;

/// A chart directory written by a test.
pub struct ChartSpec<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// Chart.yaml annotations.
    pub annotations: &'a [(&'a str, &'a str)],
    /// Files under the chart directory (e.g. `templates/cm.yaml`, `crds/x.yaml`); none means
    /// one ConfigMap ([`CONFIGMAP_TEMPLATE`]).
    pub files: &'a [(&'a str, &'a str)],
}

/// Write a chart directory under `root/<name>-<version>` and return its path.
pub fn write_chart(root: &Path, spec: &ChartSpec<'_>) -> anyhow::Result<PathBuf> {
    let dir = root.join(format!("{}-{}", spec.name, spec.version));
    std::fs::create_dir_all(dir.join("templates"))?;
    let mut chart = format!(
        "apiVersion: v2\nname: {}\nversion: {}\ntype: application\n",
        spec.name, spec.version
    );
    if !spec.annotations.is_empty() {
        chart.push_str("annotations:\n");
        for (k, v) in spec.annotations {
            chart.push_str(&format!("  {k}: {v:?}\n"));
        }
    }
    std::fs::write(dir.join("Chart.yaml"), chart)?;
    if spec.files.is_empty() {
        std::fs::write(dir.join("templates/configmap.yaml"), CONFIGMAP_TEMPLATE)?;
    }
    for (rel, text) in spec.files {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, text)?;
    }
    Ok(dir)
}

/// A profile chart's annotations: `strata.dev/profile` and, when given, the layer and the
/// category.
pub fn profile_annotations<'a>(
    layer: Option<&'a str>,
    category: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut a = vec![("strata.dev/profile", "true")];
    if let Some(l) = layer {
        a.push(("strata.dev/layer", l));
    }
    if let Some(c) = category {
        a.push(("strata.dev/category", c));
    }
    a
}
