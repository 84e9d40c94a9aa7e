//! The allocation file of the `allocated` layering model: a master list in the Git
//! repository that gives every known component (chart name) a unique layer number.
//!
//! ```yaml
//! apiVersion: strata.dev/v1alpha1
//! kind: LayerAllocation
//! components:
//!   cert-manager: 10
//!   linkerd: 20
//! ```
//! A component listed twice, and two components sharing a number, are problems naming both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::problem::Problems;
use crate::profiles::{API_VERSION, layer_value};
use crate::types::LayerNumber;
use crate::yaml::{self, Ctx, Value};

pub const KIND: &str = "LayerAllocation";
pub const FIELDS: &[&str] = &["apiVersion", "kind", "components"];

/// A validated allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The file it was read from (shown as the layer source in plans).
    pub file: String,
    pub components: BTreeMap<String, LayerNumber>,
}

impl Allocation {
    pub fn layer_of(&self, component: &str) -> Option<LayerNumber> {
        self.components.get(component).copied()
    }
}

pub fn parse(file: &str, text: &str) -> Result<Allocation, Problems> {
    let root = yaml::parse(file, text).map_err(Problems::from)?;
    let mut ctx = Ctx::new(file);
    if root.value == Value::Null {
        ctx.report(
            None,
            "",
            "the file is empty; expected a LayerAllocation document",
        );
        return Err(ctx.problems);
    }
    let Some(top) = ctx.map(&root, "", Some(FIELDS)) else {
        return Err(ctx.problems);
    };
    if let Some(n) = ctx.required(&top, "apiVersion", "")
        && let Some(v) = ctx.string(n, "apiVersion")
        && v != API_VERSION
    {
        ctx.report(
            Some(n),
            "apiVersion",
            format!("unsupported apiVersion `{v}`; expected `{API_VERSION}`"),
        );
    }
    if let Some(n) = ctx.required(&top, "kind", "")
        && let Some(k) = ctx.string(n, "kind")
        && k != KIND
    {
        ctx.report(
            Some(n),
            "kind",
            format!("unexpected kind `{k}`; expected `{KIND}`"),
        );
    }
    let mut components = BTreeMap::new();
    if let Some(n) = ctx.required(&top, "components", "") {
        match &n.value {
            Value::Map(entries) => {
                let mut first_line: BTreeMap<String, u32> = BTreeMap::new();
                let mut by_layer: BTreeMap<LayerNumber, String> = BTreeMap::new();
                for (k, v) in entries {
                    let Some(name) = k.scalar_text() else {
                        ctx.report(Some(k), "components", "component names must be strings");
                        continue;
                    };
                    let path = format!("components.{name}");
                    if let Some(line) = first_line.get(&name) {
                        ctx.report(
                            Some(k),
                            &path,
                            format!(
                                "component `{name}` is listed twice (lines {line} and {}); keep one entry",
                                k.line
                            ),
                        );
                        continue;
                    }
                    first_line.insert(name.clone(), k.line);
                    let Some(layer) = layer_value(&mut ctx, v, &path) else {
                        continue;
                    };
                    if let Some(other) = by_layer.get(&layer) {
                        ctx.report(
                            Some(v),
                            &path,
                            format!(
                                "components `{other}` and `{name}` both have layer {}; every component needs its own number",
                                layer.0
                            ),
                        );
                        continue;
                    }
                    by_layer.insert(layer, name.clone());
                    components.insert(name, layer);
                }
            }
            _ => ctx.report(
                Some(n),
                "components",
                format!(
                    "must be a mapping of component names to layer numbers, found {}",
                    n.type_name()
                ),
            ),
        }
    }
    ctx.problems.into_result(Allocation {
        file: file.to_owned(),
        components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_components() {
        let a = parse(
            "layers.yaml",
            "apiVersion: strata.dev/v1alpha1\nkind: LayerAllocation\ncomponents:\n  cert-manager: 10\n  linkerd: layer-20\n",
        )
        .unwrap();
        assert_eq!(a.layer_of("cert-manager"), Some(LayerNumber(10)));
        assert_eq!(a.layer_of("linkerd"), Some(LayerNumber(20)));
        assert_eq!(a.layer_of("flagger"), None);
        assert_eq!(a.file, "layers.yaml");
    }

    #[test]
    fn duplicate_keys_and_numbers_name_both() {
        let text = "apiVersion: strata.dev/v1alpha1\nkind: LayerAllocation\ncomponents:\n  cert-manager: 10\n  linkerd: 20\n  cert-manager: 30\n  flagger: 20\n  bad: x\n";
        let ps = parse("layers.yaml", text).unwrap_err();
        let s = ps.to_string();
        assert!(
            s.contains(
                "components.cert-manager: component `cert-manager` is listed twice (lines 4 and 6)"
            ),
            "{s}"
        );
        assert!(
            s.contains("components.flagger: components `linkerd` and `flagger` both have layer 20"),
            "{s}"
        );
        assert!(s.contains("components.bad: `x` is not a layer"), "{s}");
        assert_eq!(ps.len(), 3, "{s}");
    }

    #[test]
    fn header_problems() {
        let s = parse("l.yaml", "kind: ProfileList\ncomponents: []\nextra: 1\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("apiVersion: missing required field"), "{s}");
        assert!(s.contains("kind: unexpected kind `ProfileList`"), "{s}");
        assert!(s.contains("components: must be a mapping"), "{s}");
        assert!(s.contains("extra: unknown field"), "{s}");
        assert!(parse("l.yaml", "").is_err());
    }
}
