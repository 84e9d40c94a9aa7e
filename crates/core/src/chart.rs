//! Chart metadata (`Chart.yaml`) and the profile annotations strata reads from it.
//!
//! A chart is a *profile* when its annotations say so. Both strata's keys and Weave GitOps'
//! keys are read; when both prefixes carry the same key, strata's wins:
//!
//! | meaning  | strata key            | Weave GitOps key        | value                        |
//! |----------|-----------------------|-------------------------|------------------------------|
//! | profile  | `strata.dev/profile`  | `weave.works/profile`   | `"true"` or the profile's name; `"false"` means not a profile |
//! | layer    | `strata.dev/layer`    | `weave.works/layer`     | `layer-N` or `N`             |
//! | category | `strata.dev/category` | `weave.works/category`  | any non-empty text           |
//!
//! An invalid layer value is a problem naming the chart and the key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};
use crate::types::LayerNumber;
use crate::version::parse_version;
use crate::yaml::{self, Ctx, Node, Value, join};

pub const STRATA_PREFIX: &str = "strata.dev/";
pub const WEAVE_PREFIX: &str = "weave.works/";

/// Chart type from `Chart.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChartType {
    #[default]
    Application,
    /// Library charts cannot be installed.
    Library,
}

/// One entry of `dependencies` in `Chart.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartDependency {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

/// What the profile annotations say about a chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileMeta {
    /// The annotation key that declared the chart a profile (`strata.dev/profile`, ...).
    pub profile_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<LayerNumber>,
    /// The annotation key the layer was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The annotation key the category was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_key: Option<String>,
}

/// The parts of `Chart.yaml` strata uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartMeta {
    pub api_version: String,
    pub name: String,
    /// As written in Chart.yaml (validated as a semantic version).
    pub version: String,
    #[serde(rename = "type", default)]
    pub chart_type: ChartType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub dependencies: Vec<ChartDependency>,
    /// `Some` when the annotations declare the chart a profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileMeta>,
}

/// Read an annotation under strata's prefix, else Weave's. Returns (key, value).
fn lookup<'a>(
    annotations: &'a BTreeMap<String, String>,
    suffix: &str,
) -> Option<(String, &'a str)> {
    [STRATA_PREFIX, WEAVE_PREFIX].iter().find_map(|prefix| {
        let key = format!("{prefix}{suffix}");
        annotations.get(&key).map(|v| (key, v.as_str()))
    })
}

/// Derive [`ProfileMeta`] from a chart's annotations. `Ok(None)`: not a profile.
/// Problems name the chart (`chart`) and the annotation key.
pub fn profile_meta(
    file: &str,
    chart: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<Option<ProfileMeta>, Problems> {
    let mut problems = Problems::new();
    let field = |key: &str| format!("annotations[{key}]");
    let layer = match lookup(annotations, "layer") {
        Some((key, v)) => match LayerNumber::parse(v) {
            Ok(l) => Some((l, key)),
            Err(e) => {
                problems.push(Problem::new(
                    file,
                    field(&key),
                    format!("chart `{chart}`: {e}"),
                ));
                None
            }
        },
        None => None,
    };
    let category = match lookup(annotations, "category") {
        Some((key, v)) if v.trim().is_empty() => {
            problems.push(Problem::new(
                file,
                field(&key),
                format!("chart `{chart}`: the category is empty"),
            ));
            None
        }
        Some((key, v)) => Some((v.trim().to_owned(), key)),
        None => None,
    };
    let profile_key = match lookup(annotations, "profile") {
        Some((key, v)) => {
            let v = v.trim();
            if v.is_empty() {
                problems.push(Problem::new(
                    file,
                    field(&key),
                    format!(
                        "chart `{chart}`: the profile annotation is empty; write \"true\" (or the profile's name) or \"false\""
                    ),
                ));
                None
            } else if v.eq_ignore_ascii_case("false") {
                None
            } else {
                Some(key)
            }
        }
        None => None,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(profile_key.map(|profile_key| ProfileMeta {
        profile_key,
        layer_key: layer.as_ref().map(|(_, k)| k.clone()),
        layer: layer.map(|(l, _)| l),
        category_key: category.as_ref().map(|(_, k)| k.clone()),
        category: category.map(|(c, _)| c),
    }))
}

/// Parse `Chart.yaml`. Unknown fields are allowed (helm has many: keywords, home, ...).
pub fn parse_chart_yaml(file: &str, text: &str) -> Result<ChartMeta, Problems> {
    let root = yaml::parse(file, text).map_err(Problems::from)?;
    let mut ctx = Ctx::new(file);
    if root.value == Value::Null {
        ctx.report(None, "", "Chart.yaml is empty");
        return Err(ctx.problems);
    }
    let Some(f) = ctx.map(&root, "", None) else {
        return Err(ctx.problems);
    };
    // Helm reads a Chart.yaml without apiVersion as v1.
    let api_version = match f.get("apiVersion") {
        None => Some((f.node, "v1".to_owned())),
        Some(n) => ctx.string(n, "apiVersion").map(|s| (n, s)),
    };
    if let Some((n, v)) = &api_version
        && v != "v1"
        && v != "v2"
    {
        ctx.report(
            Some(n),
            "apiVersion",
            format!("unsupported chart apiVersion `{v}`; expected v2 (or v1)"),
        );
    }
    let name = ctx
        .required(&f, "name", "")
        .and_then(|n| ctx.string(n, "name").map(|s| (n, s)));
    if let Some((n, s)) = &name
        && (s.trim().is_empty() || s.contains(['/', '\\']))
    {
        ctx.report(Some(n), "name", format!("`{s}` is not a valid chart name"));
    }
    let version = ctx.required(&f, "version", "").and_then(|n| {
        let text = match &n.value {
            // Helm reads an unquoted number as a number: `1.10` becomes version "1.1".
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => n.scalar_text(),
            _ => ctx.string(n, "version"),
        }?;
        if let Err(e) = parse_version(&text) {
            ctx.report(Some(n), "version", e.to_string());
        }
        Some(text)
    });
    let chart_type = match f.get("type") {
        None => ChartType::Application,
        Some(n) => match ctx.string(n, "type").as_deref() {
            Some("application") | Some("") => ChartType::Application,
            Some("library") => ChartType::Library,
            Some(other) => {
                ctx.report(
                    Some(n),
                    "type",
                    format!("unknown chart type `{other}`; expected application or library"),
                );
                ChartType::Application
            }
            None => ChartType::Application,
        },
    };
    let app_version = f.get("appVersion").and_then(|n| n.scalar_text());
    let mut annotations = BTreeMap::new();
    if let Some(n) = f.get("annotations")
        && let Some(af) = ctx.map(n, "annotations", None)
    {
        for (k, _, v) in &af.entries {
            // Like helm, scalars become text (numbers as numbers: `012` is "10");
            // lists and mappings are errors.
            match v.scalar_text() {
                Some(s) if v.value != Value::Null => {
                    annotations.insert(k.clone(), s);
                }
                _ => ctx.report(
                    Some(v),
                    &format!("annotations[{k}]"),
                    format!("annotation values must be strings, found {}", v.type_name()),
                ),
            }
        }
    }
    let mut dependencies = Vec::new();
    if let Some(n) = f.get("dependencies")
        && let Some(items) = ctx.seq(n, "dependencies")
    {
        for (i, item) in items.iter().enumerate() {
            let path = format!("dependencies[{i}]");
            let Some(df) = ctx.map(item, &path, None) else {
                continue;
            };
            let Some(dep_name) = ctx
                .required(&df, "name", &path)
                .and_then(|n| ctx.string(n, &join(&path, "name")))
            else {
                continue;
            };
            let text = |key: &str| df.get(key).and_then(Node::scalar_text);
            dependencies.push(ChartDependency {
                name: dep_name,
                version: text("version"),
                repository: text("repository"),
                condition: text("condition"),
                alias: text("alias"),
            });
        }
    }
    let chart_name = name.as_ref().map_or("?", |(_, s)| s.as_str()).to_owned();
    let profile = match profile_meta(file, &chart_name, &annotations) {
        Ok(p) => p,
        Err(ps) => {
            ctx.problems.extend(ps);
            None
        }
    };
    match (api_version, name, version) {
        (Some((_, api_version)), Some((_, name)), Some(version)) if ctx.problems.is_empty() => {
            Ok(ChartMeta {
                api_version,
                name,
                version,
                chart_type,
                app_version,
                annotations,
                dependencies,
                profile,
            })
        }
        _ => Err(ctx.problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT_MANAGER: &str = r#"
apiVersion: v2
name: cert-manager
version: v1.14.4
appVersion: v1.14.4
description: certificates
keywords: [tls]
annotations:
  strata.dev/profile: "true"
  strata.dev/layer: layer-1
  strata.dev/category: certificates
dependencies:
  - name: common
    version: 1.x
    repository: https://charts.example.com
    condition: common.enabled
"#;

    #[test]
    fn parses_strata_annotations() {
        let c = parse_chart_yaml("cert-manager/Chart.yaml", CERT_MANAGER).unwrap();
        assert_eq!(c.name, "cert-manager");
        assert_eq!(c.version, "v1.14.4");
        assert_eq!(c.chart_type, ChartType::Application);
        assert_eq!(c.dependencies[0].name, "common");
        assert_eq!(
            c.dependencies[0].condition.as_deref(),
            Some("common.enabled")
        );
        let p = c.profile.unwrap();
        assert_eq!(p.layer, Some(LayerNumber(1)));
        assert_eq!(p.layer_key.as_deref(), Some("strata.dev/layer"));
        assert_eq!(p.category.as_deref(), Some("certificates"));
        assert_eq!(p.profile_key, "strata.dev/profile");
    }

    #[test]
    fn weave_keys_and_precedence() {
        let text = "apiVersion: v2\nname: linkerd\nversion: 1.0.0\nannotations:\n  weave.works/profile: linkerd\n  weave.works/layer: layer-2\n  weave.works/category: service-mesh\n  strata.dev/layer: \"7\"\n";
        let p = parse_chart_yaml("Chart.yaml", text)
            .unwrap()
            .profile
            .unwrap();
        assert_eq!(p.profile_key, "weave.works/profile");
        assert_eq!(p.layer, Some(LayerNumber(7)), "strata's key wins");
        assert_eq!(p.layer_key.as_deref(), Some("strata.dev/layer"));
        assert_eq!(p.category.as_deref(), Some("service-mesh"));
        assert_eq!(p.category_key.as_deref(), Some("weave.works/category"));
    }

    #[test]
    fn not_a_profile() {
        let plain = "apiVersion: v2\nname: plain\nversion: 1.0.0\n";
        assert_eq!(parse_chart_yaml("Chart.yaml", plain).unwrap().profile, None);
        let off = "apiVersion: v2\nname: disabled\nversion: 1.0.0\nannotations:\n  strata.dev/profile: \"false\"\n  weave.works/profile: \"true\"\n";
        assert_eq!(parse_chart_yaml("Chart.yaml", off).unwrap().profile, None);
    }

    #[test]
    fn bad_layer_names_chart_and_key() {
        let text = "apiVersion: v2\nname: flagger\nversion: 1.0.0\nannotations:\n  weave.works/profile: \"true\"\n  weave.works/layer: top\n";
        let ps = parse_chart_yaml("flagger/Chart.yaml", text).unwrap_err();
        assert_eq!(
            ps.to_string(),
            "flagger/Chart.yaml: annotations[weave.works/layer]: chart `flagger`: `top` is not a layer: write `layer-N` or `N` with N a non-negative integer"
        );
    }

    #[test]
    fn invalid_chart_yaml_reports_everything() {
        let text =
            "apiVersion: v3\nversion: one\ntype: plugin\nannotations:\n  strata.dev/layer: [5]\n";
        let ps = parse_chart_yaml("Chart.yaml", text).unwrap_err();
        let s = ps.to_string();
        for needle in [
            "apiVersion: unsupported chart apiVersion `v3`",
            "name: missing required field `name`",
            "version: `one` is not a semantic version",
            "type: unknown chart type `plugin`",
            "annotations[strata.dev/layer]: annotation values must be strings",
        ] {
            assert!(s.contains(needle), "missing {needle} in {s}");
        }
        assert_eq!(ps.len(), 5, "{s}");
        assert!(parse_chart_yaml("Chart.yaml", "").is_err());
        assert!(parse_chart_yaml("Chart.yaml", "[1]").is_err());
    }

    #[test]
    fn lenient_where_helm_is() {
        // No apiVersion (v1), a name with spaces, numeric annotation values, an unquoted
        // version: helm accepts all of these, and reads the numbers as numbers.
        let text = "name: My Chart\nversion: 1.10\nappVersion: 2.0\nannotations:\n  strata.dev/profile: true\n  strata.dev/layer: 5\n";
        let c = parse_chart_yaml("Chart.yaml", text).unwrap();
        assert_eq!(c.api_version, "v1");
        assert_eq!(c.name, "My Chart");
        assert_eq!(c.version, "1.1");
        assert_eq!(c.app_version.as_deref(), Some("2"));
        assert_eq!(c.annotations["strata.dev/layer"], "5");
        assert_eq!(c.profile.unwrap().layer, Some(LayerNumber(5)));
        let ps = parse_chart_yaml("Chart.yaml", "name: a/b\nversion: 1.0.0\n").unwrap_err();
        assert!(
            ps.to_string().contains("`a/b` is not a valid chart name"),
            "{ps}"
        );
    }

    #[test]
    fn library_chart_type() {
        let c = parse_chart_yaml(
            "C",
            "apiVersion: v2\nname: lib\nversion: 0.1.0\ntype: library\n",
        )
        .unwrap();
        assert_eq!(c.chart_type, ChartType::Library);
    }
}
