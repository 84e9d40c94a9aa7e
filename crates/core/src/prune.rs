//! Which releases a revision removes: the pure plan of pruning.
//!
//! strata owns a release only when the release carries its labels
//! (`strata.io/managed-by=strata`, see [`crate::digest`]); nothing else is ever removed. A
//! managed release whose name and namespace no profile of the new revision has (the profile
//! was removed, or its release name or namespace changed) is removed: highest layer first
//! (releases without a layer were installed last, so they go first), each layer's removals
//! finished before the layer below starts, and all of them before the revision's installs
//! (the agent runs them in that order; Helmfile does the same).
//!
//! Two guards, both decided here:
//! - `prune: false` in the profile list: nothing is removed; the releases are reported as
//!   orphaned.
//! - A revision that would remove every release strata manages (an emptied list, or one whose
//!   profiles all moved) is rejected unless the list says `allowEmpty: true` (Argo CD's
//!   guard), so an accidentally emptied list cannot tear a cluster down.
//!
//! ```
//! use strata_core::prune::*;
//!
//! let managed = [
//!     Managed::new("certs", "certs", Some(1)),
//!     Managed::new("mesh", "mesh", Some(2)),
//!     Managed::new("canary", "canary", Some(3)),
//! ];
//! let desired = [("mesh".to_string(), "mesh".to_string())];
//! let plan = plan_removals(&desired, &managed, Settings::default()).unwrap();
//! let order: Vec<_> = plan.removals.iter().map(|l| l.layer).collect();
//! assert_eq!(order, [Some(3), Some(1)]);
//!
//! // Emptied: rejected unless allowEmpty.
//! let e = plan_removals(&[], &managed, Settings::default()).unwrap_err();
//! assert!(e.to_string().contains("allowEmpty: true"));
//! ```

use std::cmp::Reverse;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A release found in the cluster with strata's labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Managed {
    pub name: String,
    pub namespace: String,
    /// The layer recorded on the release (`None`: unlayered, or not recorded).
    pub layer: Option<u32>,
    /// The profile recorded on the release.
    #[serde(default)]
    pub profile: String,
}

impl Managed {
    pub fn new(name: &str, namespace: &str, layer: Option<u32>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            layer,
            profile: name.into(),
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The profile list's pruning fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// `prune` (default true): remove managed releases the list no longer has.
    pub prune: bool,
    /// `allowEmpty` (default false): allow a revision that removes every managed release.
    pub allow_empty: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prune: true,
            allow_empty: false,
        }
    }
}

/// The removals of one layer (run together; the next layer waits for all of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovalLayer {
    /// `None`: releases without a layer (removed first).
    pub layer: Option<u32>,
    pub releases: Vec<Managed>,
}

/// What a revision removes, in order, and what it leaves orphaned.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Removals {
    /// Layers to remove, in the order they run: unlayered first, then highest layer first.
    pub removals: Vec<RemovalLayer>,
    /// Releases the list no longer has, kept because `prune` is false.
    pub orphans: Vec<Managed>,
}

impl Removals {
    /// Every release to remove, in order.
    pub fn releases(&self) -> impl Iterator<Item = &Managed> {
        self.removals.iter().flat_map(|l| l.releases.iter())
    }

    pub fn is_empty(&self) -> bool {
        self.removals.is_empty() && self.orphans.is_empty()
    }
}

/// A revision that would remove every managed release, without `allowEmpty: true`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this revision would uninstall every release strata manages ({}: {}); nothing was removed. If that is intended, set `allowEmpty: true` in the profile list (or `prune: false` to keep them installed)",
    releases.len(),
    releases.join(", ")
)]
pub struct WouldEmpty {
    /// `namespace/name` of every managed release.
    pub releases: Vec<String>,
}

/// Plan the removals of a revision: `desired` are the (release name, namespace) pairs of its
/// profiles, `managed` the releases found with strata's labels.
pub fn plan_removals(
    desired: &[(String, String)],
    managed: &[Managed],
    settings: Settings,
) -> Result<Removals, WouldEmpty> {
    let wanted: BTreeSet<(&str, &str)> = desired
        .iter()
        .map(|(n, ns)| (n.as_str(), ns.as_str()))
        .collect();
    let mut gone: Vec<Managed> = managed
        .iter()
        .filter(|m| !wanted.contains(&(m.name.as_str(), m.namespace.as_str())))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if gone.is_empty() {
        return Ok(Removals::default());
    }
    if !settings.prune {
        return Ok(Removals {
            removals: Vec::new(),
            orphans: gone,
        });
    }
    let kept = managed
        .iter()
        .any(|m| wanted.contains(&(m.name.as_str(), m.namespace.as_str())));
    if !kept && !settings.allow_empty {
        return Err(WouldEmpty {
            releases: gone.iter().map(Managed::key).collect(),
        });
    }
    // Unlayered first (installed last), then from the highest layer down.
    let order = |l: Option<u32>| l.map_or((1, 0), |n| (0, n));
    gone.sort_by_key(|m| (Reverse(order(m.layer)), m.namespace.clone(), m.name.clone()));
    let mut removals: Vec<RemovalLayer> = Vec::new();
    for m in gone {
        match removals.last_mut() {
            Some(l) if l.layer == m.layer => l.releases.push(m),
            _ => removals.push(RemovalLayer {
                layer: m.layer,
                releases: vec![m],
            }),
        }
    }
    Ok(Removals {
        removals,
        orphans: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn stack() -> Vec<Managed> {
        vec![
            Managed::new("certs", "certs", Some(1)),
            Managed::new("issuer", "certs", Some(1)),
            Managed::new("mesh", "mesh", Some(2)),
            Managed::new("canary", "canary", Some(3)),
            Managed::new("tools", "tools", None),
        ]
    }

    fn keys(r: &Removals) -> Vec<Vec<String>> {
        r.removals
            .iter()
            .map(|l| l.releases.iter().map(Managed::key).collect())
            .collect()
    }

    #[test]
    fn nothing_removed_when_everything_is_still_wanted() {
        let all = d(&[
            ("certs", "certs"),
            ("issuer", "certs"),
            ("mesh", "mesh"),
            ("canary", "canary"),
            ("tools", "tools"),
            ("new", "new"),
        ]);
        let r = plan_removals(&all, &stack(), Settings::default()).unwrap();
        assert!(r.is_empty());
        assert!(
            plan_removals(&all, &[], Settings::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn removals_run_unlayered_first_then_highest_layer_first() {
        let r = plan_removals(&d(&[("mesh", "mesh")]), &stack(), Settings::default()).unwrap();
        assert_eq!(
            keys(&r),
            vec![
                vec!["tools/tools".to_string()],
                vec!["canary/canary".into()],
                vec!["certs/certs".into(), "certs/issuer".into()],
            ]
        );
        assert_eq!(
            r.removals.iter().map(|l| l.layer).collect::<Vec<_>>(),
            [None, Some(3), Some(1)]
        );
        assert_eq!(r.releases().count(), 4);
    }

    #[test]
    fn a_changed_name_or_namespace_removes_the_old_release() {
        let desired = d(&[
            ("certs", "cert-manager"), // namespace changed
            ("issuer", "certs"),
            ("mesh2", "mesh"), // release name changed
            ("canary", "canary"),
            ("tools", "tools"),
        ]);
        let r = plan_removals(&desired, &stack(), Settings::default()).unwrap();
        assert_eq!(
            keys(&r),
            vec![vec!["mesh/mesh".to_string()], vec!["certs/certs".into()]]
        );
    }

    #[test]
    fn prune_off_reports_orphans_and_removes_nothing() {
        let settings = Settings {
            prune: false,
            allow_empty: false,
        };
        let r = plan_removals(&d(&[("mesh", "mesh")]), &stack(), settings).unwrap();
        assert!(r.removals.is_empty());
        assert_eq!(r.orphans.len(), 4);
        // Emptied with prune off: nothing to guard, all orphaned.
        let r = plan_removals(&[], &stack(), settings).unwrap();
        assert_eq!(r.orphans.len(), 5);
    }

    #[test]
    fn an_emptied_list_is_rejected_unless_allow_empty() {
        let e = plan_removals(&[], &stack(), Settings::default()).unwrap_err();
        assert_eq!(e.releases.len(), 5);
        let text = e.to_string();
        assert!(text.contains("allowEmpty: true"), "{text}");
        assert!(text.contains("canary/canary"), "{text}");
        // Profiles that all moved elsewhere would remove every managed release too.
        assert!(plan_removals(&d(&[("x", "y")]), &stack(), Settings::default()).is_err());
        let allow = Settings {
            prune: true,
            allow_empty: true,
        };
        let r = plan_removals(&[], &stack(), allow).unwrap();
        assert_eq!(r.releases().count(), 5);
        // Nothing managed: nothing to remove, nothing to guard.
        assert!(
            plan_removals(&[], &[], Settings::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn duplicates_are_removed_once() {
        let twice = vec![
            Managed::new("a", "n", Some(1)),
            Managed::new("a", "n", Some(1)),
            Managed::new("b", "n", Some(1)),
        ];
        let r = plan_removals(
            &d(&[("b", "n")]),
            &twice,
            Settings {
                prune: true,
                allow_empty: false,
            },
        )
        .unwrap();
        assert_eq!(keys(&r), vec![vec!["n/a".to_string()]]);
    }
}
