//! Layer planning: which layer each profile's release belongs to, and where that number
//! came from.
//!
//! Rules, in order, for each profile of the list:
//! 1. A `layer` written on the profile overrides every model ([`LayerSource::Override`]).
//! 2. Otherwise the chart must be a profile (a `strata.dev/profile` or `weave.works/profile`
//!    annotation); a plain chart without an override is a problem: Weave profile users expect
//!    only profiles in a list, and a plain chart has no layer to give. Set `layer` on the list
//!    entry to install a plain chart anyway.
//! 3. Model `annotation`: the chart's layer annotation ([`LayerSource::Annotation`]); a
//!    profile without one is *unlayered*.
//! 4. Model `category`: the chart's category annotation looked up in `layering.categories`
//!    ([`LayerSource::Category`]); a missing category or one absent from the map is a problem.
//! 5. Model `allocated`: the chart name looked up in the allocation file
//!    ([`LayerSource::Allocation`]); a chart absent from it is a problem.
//!
//! Layers run in numeric order; unlayered releases form a final group that runs after every
//! numbered layer, and the plan says so. Within a layer, releases come after the profiles
//! they depend on (`dependsOn`, checked by [`crate::depends::check`]: unknown or higher-layer
//! references and cycles are problems), in list order otherwise. Besides, every chart is checked against its list
//! entry: the chart name (repository charts), the version constraint, and not a library chart.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::allocation::Allocation;
use crate::chart::{ChartMeta, ChartType};
use crate::problem::{Problem, Problems};
use crate::profiles::{ChartRef, LayeringModel, ProfileList};
use crate::types::{GoDuration, LayerNumber};
use crate::version::parse_version;

/// The name of a profile in the list.
pub type ProfileName = String;

/// A release: namespace and name. Displays as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReleaseKey {
    pub namespace: String,
    pub name: String,
}

impl ReleaseKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ReleaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a release's layer number came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum LayerSource {
    /// `layer` on the profile in the list.
    Override,
    /// The chart's layer annotation `key`.
    Annotation { key: String },
    /// The chart's category (from annotation `key`) mapped by `layering.categories`.
    Category { category: String, key: String },
    /// The allocation file `file`.
    Allocation { file: String },
    /// No layer: the release runs after every numbered layer.
    Unlayered { reason: String },
}

impl fmt::Display for LayerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Override => f.write_str("layer set in the profile list"),
            Self::Annotation { key } => write!(f, "annotation {key}"),
            Self::Category { category, key } => {
                write!(
                    f,
                    "category {category} from {key}, mapped by layering.categories"
                )
            }
            Self::Allocation { file } => write!(f, "allocation file {file}"),
            Self::Unlayered { reason } => write!(f, "unlayered: {reason}"),
        }
    }
}

/// One release in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedRelease {
    pub profile: ProfileName,
    pub release: ReleaseKey,
    pub chart: ChartRef,
    /// From Chart.yaml.
    pub chart_name: String,
    /// From Chart.yaml (the resolved version).
    pub chart_version: String,
    /// The constraint written in the list, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_constraint: Option<String>,
    /// `None` for unlayered releases.
    pub layer: Option<LayerNumber>,
    pub layer_source: LayerSource,
    pub timeout: GoDuration,
    /// Profiles this release waits for (`dependsOn` in the list, as written). Those of the
    /// same layer must be Ready before it starts; those of lower layers are Ready before its
    /// layer starts anyway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ProfileName>,
}

/// A group of releases that start together. `layer` is `None` for the final unlayered group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedLayer {
    pub layer: Option<LayerNumber>,
    /// `layer-N`, or `unlayered`.
    pub name: String,
    pub releases: Vec<PlannedRelease>,
}

/// The ordered layers of a profile list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub model: LayeringModel,
    /// Numbered layers in ascending order, then at most one unlayered group.
    pub layers: Vec<PlannedLayer>,
    /// Statements about the plan for users (e.g. that unlayered releases run last).
    pub notes: Vec<String>,
}

impl Plan {
    /// Every release, in layer order.
    pub fn releases(&self) -> impl Iterator<Item = &PlannedRelease> {
        self.layers.iter().flat_map(|l| l.releases.iter())
    }

    pub fn release(&self, key: &ReleaseKey) -> Option<&PlannedRelease> {
        self.releases().find(|r| &r.release == key)
    }

    /// Index into [`Plan::layers`] of the layer holding `key`.
    pub fn layer_index(&self, key: &ReleaseKey) -> Option<usize> {
        self.layers
            .iter()
            .position(|l| l.releases.iter().any(|r| &r.release == key))
    }
}

/// Layers in order, each release with `chart@version`, namespace and layer source.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.render(f, |_| None)
    }
}

impl Plan {
    /// The text of [`Plan`]'s `Display`, with the lines `detail` gives for a release (e.g.
    /// who waits for it) printed indented under the release's line.
    pub fn render(
        &self,
        f: &mut impl fmt::Write,
        detail: impl Fn(&PlannedRelease) -> Option<String>,
    ) -> fmt::Result {
        writeln!(f, "layering model: {}", self.model)?;
        if self.layers.is_empty() {
            writeln!(f, "no profiles")?;
        }
        for layer in &self.layers {
            match layer.layer {
                Some(_) => writeln!(f, "{}:", layer.name)?,
                None => writeln!(f, "unlayered (runs after every numbered layer):")?,
            }
            for r in &layer.releases {
                write!(
                    f,
                    "  {}  {}@{}  namespace {}  ({})",
                    r.release.name,
                    r.chart_name,
                    r.chart_version,
                    r.release.namespace,
                    r.layer_source
                )?;
                if r.depends_on.is_empty() {
                    writeln!(f)?;
                } else {
                    writeln!(f, "  (after: {})", r.depends_on.join(", "))?;
                }
                if let Some(detail) = detail(r) {
                    for line in detail.lines() {
                        writeln!(f, "    {line}")?;
                    }
                }
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

/// Plan the layers of `list`. `charts` holds the Chart.yaml of every profile (by profile
/// name); `allocation` is required by the `allocated` model. All problems are reported at
/// once, with the profile list's file name.
pub fn plan(
    list: &ProfileList,
    charts: &BTreeMap<ProfileName, ChartMeta>,
    allocation: Option<&Allocation>,
) -> Result<Plan, Problems> {
    let file = list.file.as_str();
    let mut problems = Problems::new();
    let mut numbered: BTreeMap<LayerNumber, Vec<PlannedRelease>> = BTreeMap::new();
    let mut unlayered = Vec::new();
    if list.layering.model == LayeringModel::Allocated && allocation.is_none() {
        problems.push(Problem::new(
            file,
            "layering.allocationFile",
            format!(
                "the allocation file {} was not loaded; the `allocated` model needs it",
                list.layering
                    .allocation_file
                    .as_deref()
                    .unwrap_or("(none given)")
            ),
        ));
    }
    for p in &list.profiles {
        let path = format!("profiles[{}]", p.name);
        let Some(meta) = charts.get(&p.name) else {
            problems.push(Problem::new(
                file,
                format!("{path}.chart"),
                format!(
                    "no Chart.yaml was found for profile `{}` (chart {})",
                    p.name, p.chart
                ),
            ));
            continue;
        };
        let mut ok = true;
        if let ChartRef::Repository { name, .. } = &p.chart
            && &meta.name != name
        {
            problems.push(Problem::new(
                file,
                format!("{path}.chart.name"),
                format!(
                    "the chart fetched for `{name}` calls itself `{}` in its Chart.yaml",
                    meta.name
                ),
            ));
            ok = false;
        }
        if meta.chart_type == ChartType::Library {
            problems.push(Problem::new(
                file,
                format!("{path}.chart"),
                format!(
                    "chart `{}` is a library chart, which cannot be installed",
                    meta.name
                ),
            ));
            ok = false;
        }
        if let Some(c) = &p.version {
            let matches = parse_version(&meta.version).is_ok_and(|v| c.matches(&v));
            if !matches {
                problems.push(Problem::new(
                    file,
                    format!("{path}.version"),
                    format!(
                        "chart `{}` has version {}, which does not satisfy `{c}`",
                        meta.name, meta.version
                    ),
                ));
                ok = false;
            }
        }
        let assigned: Option<(Option<LayerNumber>, LayerSource)> = if let Some(l) = p.layer {
            Some((Some(l), LayerSource::Override))
        } else if let Some(pm) = &meta.profile {
            match list.layering.model {
                LayeringModel::Annotation => match (pm.layer, &pm.layer_key) {
                    (Some(l), Some(key)) => {
                        Some((Some(l), LayerSource::Annotation { key: key.clone() }))
                    }
                    _ => Some((
                        None,
                        LayerSource::Unlayered {
                            reason: format!(
                                "chart `{}` has no layer annotation (strata.dev/layer or weave.works/layer)",
                                meta.name
                            ),
                        },
                    )),
                },
                LayeringModel::Category => match (&pm.category, &pm.category_key) {
                    (Some(cat), Some(key)) => match list.layering.categories.get(cat) {
                        Some(l) => Some((
                            Some(*l),
                            LayerSource::Category {
                                category: cat.clone(),
                                key: key.clone(),
                            },
                        )),
                        None => {
                            let known: Vec<&str> = list
                                .layering
                                .categories
                                .keys()
                                .map(String::as_str)
                                .collect();
                            problems.push(Problem::new(
                                file,
                                format!("{path}.chart"),
                                format!(
                                    "chart `{}` has category `{cat}`, which layering.categories does not map (known: {}); add it or set `layer` on the profile",
                                    meta.name,
                                    known.join(", ")
                                ),
                            ));
                            None
                        }
                    },
                    _ => {
                        problems.push(Problem::new(
                            file,
                            format!("{path}.chart"),
                            format!(
                                "chart `{}` has no category annotation (strata.dev/category or weave.works/category), which the `category` model needs; add one or set `layer` on the profile",
                                meta.name
                            ),
                        ));
                        None
                    }
                },
                LayeringModel::Allocated => match allocation {
                    None => None,
                    Some(a) => match a.layer_of(&meta.name) {
                        Some(l) => Some((
                            Some(l),
                            LayerSource::Allocation {
                                file: a.file.clone(),
                            },
                        )),
                        None => {
                            problems.push(Problem::new(
                                file,
                                format!("{path}.chart"),
                                format!(
                                    "component `{}` is not in the allocation file {}; add it there or set `layer` on the profile",
                                    meta.name, a.file
                                ),
                            ));
                            None
                        }
                    },
                },
            }
        } else {
            problems.push(Problem::new(
                file,
                format!("{path}.chart"),
                format!(
                    "chart `{}` is not a profile: it has no strata.dev/profile or weave.works/profile annotation; annotate the chart or set `layer` on this profile to install it anyway",
                    meta.name
                ),
            ));
            None
        };
        let (Some((layer, layer_source)), true) = (assigned, ok) else {
            continue;
        };
        let release = PlannedRelease {
            profile: p.name.clone(),
            release: ReleaseKey::new(&p.namespace, &p.release_name),
            chart: p.chart.clone(),
            chart_name: meta.name.clone(),
            chart_version: meta.version.clone(),
            version_constraint: p.version.as_ref().map(|c| c.as_str().to_owned()),
            layer,
            layer_source,
            timeout: p.timeout,
            depends_on: p.depends_on.clone(),
        };
        match layer {
            Some(l) => numbered.entry(l).or_default().push(release),
            None => unlayered.push(release),
        }
    }
    let layer_of: BTreeMap<&str, Option<LayerNumber>> = numbered
        .values()
        .flatten()
        .chain(&unlayered)
        .map(|r| (r.profile.as_str(), r.layer))
        .collect();
    for p in crate::depends::check(list, &layer_of) {
        problems.push(p);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut notes = Vec::new();
    let mut layers: Vec<PlannedLayer> = numbered
        .into_iter()
        .map(|(l, releases)| PlannedLayer {
            layer: Some(l),
            name: l.to_string(),
            releases: in_dependency_order(releases),
        })
        .collect();
    let unlayered = in_dependency_order(unlayered);
    if !unlayered.is_empty() {
        let names: Vec<String> = unlayered.iter().map(|r| r.release.to_string()).collect();
        notes.push(format!(
            "{} release(s) without a layer run after every numbered layer: {}",
            unlayered.len(),
            names.join(", ")
        ));
        layers.push(PlannedLayer {
            layer: None,
            name: "unlayered".into(),
            releases: unlayered,
        });
    }
    Ok(Plan {
        model: list.layering.model,
        layers,
        notes,
    })
}

/// A layer's releases, each after the ones it depends on (list order otherwise).
fn in_dependency_order(releases: Vec<PlannedRelease>) -> Vec<PlannedRelease> {
    let names: Vec<&str> = releases.iter().map(|r| r.profile.as_str()).collect();
    let order = crate::depends::order(&names, |n| {
        releases
            .iter()
            .find(|r| r.profile == n)
            .map(|r| r.depends_on.clone())
            .unwrap_or_default()
    });
    let mut slots: Vec<Option<PlannedRelease>> = releases.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .collect()
}

#[cfg(test)]
mod tests;
