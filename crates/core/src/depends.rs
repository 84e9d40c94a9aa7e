//! Order within a layer: a profile's `dependsOn` (Helmfile's `needs`, Flux's `dependsOn`).
//!
//! Checked at plan time, once every profile has its layer ([`check`]):
//! - each name must be a profile of the list, and not the profile itself;
//! - a dependency in a *lower* layer is allowed and changes nothing (layers already run in
//!   order); one in a *higher* layer (or, from a numbered layer, in the unlayered group that
//!   runs last) can never be met and is a problem;
//! - the dependencies inside one layer must not form a cycle; each cycle is reported once,
//!   naming its members (`dependsOn cycle: a -> b -> c -> a`).
//!
//! [`order`] then sorts the releases of a layer so each comes after what it depends on (the
//! list's order otherwise), which is the order `strata plan` prints. The scheduler
//! ([`crate::schedule::next_actions`]) starts a release only once its dependencies of the same
//! layer are Ready.

use std::collections::BTreeMap;

use crate::problem::{Problem, Problems};
use crate::profiles::ProfileList;
use crate::types::LayerNumber;

/// Where a layer sits in the run order: numbered layers ascending, the unlayered group last.
fn rank(layer: Option<LayerNumber>) -> (bool, u32) {
    (layer.is_none(), layer.map_or(0, |l| l.0))
}

fn layer_name(layer: Option<LayerNumber>) -> String {
    layer.map_or_else(
        || "the unlayered group (which runs after every numbered layer)".to_owned(),
        |l| l.to_string(),
    )
}

/// Every problem of the list's `dependsOn` fields. `layers` holds the layer of each profile
/// that could be planned (`None`: unlayered); a profile missing from it (its chart had a
/// problem) is checked for existence only.
pub fn check(list: &ProfileList, layers: &BTreeMap<&str, Option<LayerNumber>>) -> Problems {
    let file = list.file.as_str();
    let mut problems = Problems::new();
    let problem = |p: &str, i: usize, message: String| {
        let profile = list.profile(p);
        let (line, column) = profile.map_or((0, 0), |x| x.depends_on_at.get(i));
        let file = profile.map_or(file, |x| x.depends_on_at.file(file));
        Problem::new(file, format!("profiles[{p}].dependsOn[{i}]"), message).at(line, column)
    };
    for p in &list.profiles {
        for (i, dep) in p.depends_on.iter().enumerate() {
            if *dep == p.name {
                problems.push(problem(
                    &p.name,
                    i,
                    format!("profile `{dep}` depends on itself; remove it from its dependsOn"),
                ));
                continue;
            }
            if list.profile(dep).is_none() {
                problems.push(problem(
                    &p.name,
                    i,
                    format!(
                        "no profile named `{dep}` in the list; dependsOn names other profiles of the same list"
                    ),
                ));
                continue;
            }
            let (Some(mine), Some(theirs)) =
                (layers.get(p.name.as_str()), layers.get(dep.as_str()))
            else {
                continue;
            };
            if rank(*theirs) > rank(*mine) {
                problems.push(problem(
                    &p.name,
                    i,
                    format!(
                        "`{dep}` is in {}, above {} of `{}`: it would only be installed after this profile, so the dependency can never be met; depend only on profiles of the same layer (or lower ones, which are Ready first anyway), or move `{dep}` down",
                        layer_name(*theirs),
                        layer_name(*mine),
                        p.name
                    ),
                ));
            }
        }
    }
    for Cycle { members, also } in cycles(list, layers) {
        let first = &members[0];
        let next = &members[1 % members.len()];
        let i = list
            .profile(first)
            .and_then(|p| p.depends_on.iter().position(|d| d == next))
            .unwrap_or(0);
        let path = format!("{} -> {first}", members.join(" -> "));
        let also = if also.is_empty() {
            String::new()
        } else {
            format!(" (also caught in it: {})", also.join(", "))
        };
        problems.push(problem(
            first,
            i,
            format!(
                "dependsOn cycle: {path}{also}; none of them could ever start: remove one of these dependencies"
            ),
        ));
    }
    problems
}

/// The edges of one profile that stay inside its layer: indices into `list.profiles`.
fn same_layer_edges(
    list: &ProfileList,
    layers: &BTreeMap<&str, Option<LayerNumber>>,
) -> Vec<Vec<usize>> {
    let index: BTreeMap<&str, usize> = list
        .profiles
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    list.profiles
        .iter()
        .map(|p| {
            let Some(mine) = layers.get(p.name.as_str()) else {
                return Vec::new();
            };
            p.depends_on
                .iter()
                .filter(|d| **d != p.name && layers.get(d.as_str()) == Some(mine))
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect()
}

/// A cycle among dependencies of the same layer: its members in order, starting with the one
/// first in the list, and the other members of its strongly connected group (profiles
/// caught in the same knot of cycles, which can never start either).
struct Cycle {
    members: Vec<String>,
    also: Vec<String>,
}

/// Each knot of cycles among dependencies of the same layer, once.
fn cycles(list: &ProfileList, layers: &BTreeMap<&str, Option<LayerNumber>>) -> Vec<Cycle> {
    let edges = same_layer_edges(list, layers);
    let name = |i: usize| list.profiles[i].name.clone();
    let mut out = Vec::new();
    for group in strongly_connected(&edges) {
        if group.len() < 2 {
            continue;
        }
        let cycle = cycle_from(group[0], &edges, &group);
        let also = group
            .iter()
            .copied()
            .filter(|g| !cycle.contains(g))
            .map(name)
            .collect();
        out.push(Cycle {
            members: cycle.into_iter().map(name).collect(),
            also,
        });
    }
    out
}

/// A simple cycle from `start` back to it, inside `group` (a strongly connected group with
/// at least two members), found depth first following each profile's `dependsOn` order.
fn cycle_from(start: usize, edges: &[Vec<usize>], group: &[usize]) -> Vec<usize> {
    let mut path = vec![start];
    let mut next_edge = vec![0usize];
    let mut on_path = vec![false; edges.len()];
    let mut dead = vec![false; edges.len()];
    let mut in_group = vec![false; edges.len()];
    for &g in group {
        in_group[g] = true;
    }
    on_path[start] = true;
    while let Some(&top) = path.last() {
        let k = next_edge.last().copied().unwrap_or(0);
        let Some(&to) = edges[top].get(k) else {
            // Exhausted: no way back to `start` through `top`.
            dead[top] = true;
            on_path[top] = false;
            path.pop();
            next_edge.pop();
            continue;
        };
        if let Some(n) = next_edge.last_mut() {
            *n += 1;
        }
        if to == start {
            return path;
        }
        if in_group[to] && !on_path[to] && !dead[to] {
            on_path[to] = true;
            path.push(to);
            next_edge.push(0);
        }
    }
    // Unreachable for a strongly connected group; the group itself is still a fair answer.
    group.to_vec()
}

/// Tarjan's strongly connected components, iteratively (no recursion on a long chain). Each
/// component's members are sorted (list order); components come in list order of their first
/// member.
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0usize;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, next edge to look at)
        let mut work = vec![(root, 0usize)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut e)) = work.last_mut() {
            if let Some(&w) = edges[v].get(*e) {
                *e += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut group = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    group.push(w);
                    if w == v {
                        break;
                    }
                }
                group.sort_unstable();
                out.push(group);
            }
        }
    }
    out.sort_by_key(|g| g[0]);
    out
}

/// The releases' order within one layer: each after the profiles it depends on in the same
/// layer, otherwise as listed (a stable topological order). `names` are the layer's profiles
/// in list order, `depends_on` gives each one's dependencies. Members of a cycle (rejected
/// by [`check`]) keep their place at the end.
pub fn order(names: &[&str], depends_on: impl Fn(&str) -> Vec<String>) -> Vec<usize> {
    let deps: Vec<Vec<usize>> = names
        .iter()
        .map(|n| {
            depends_on(n)
                .iter()
                .filter_map(|d| names.iter().position(|x| x == d))
                .collect()
        })
        .collect();
    let mut placed = vec![false; names.len()];
    let mut out = Vec::with_capacity(names.len());
    while out.len() < names.len() {
        let ready = (0..names.len()).find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d]));
        match ready {
            Some(i) => {
                placed[i] = true;
                out.push(i);
            }
            None => {
                out.extend((0..names.len()).filter(|&i| !placed[i]));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles;

    /// A list of path-chart profiles, each `(name, dependsOn)`.
    fn list(profiles: &[(&str, &[&str])]) -> ProfileList {
        let mut text = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprofiles:\n".to_owned();
        for (name, deps) in profiles {
            text.push_str(&format!(
                "  - name: {name}\n    chart: {{path: charts/{name}}}\n"
            ));
            if !deps.is_empty() {
                text.push_str(&format!("    dependsOn: [{}]\n", deps.join(", ")));
            }
        }
        profiles::parse("profiles.yaml", &text).unwrap()
    }

    fn layers<'a>(l: &[(&'a str, Option<u32>)]) -> BTreeMap<&'a str, Option<LayerNumber>> {
        l.iter().map(|(n, x)| (*n, x.map(LayerNumber))).collect()
    }

    fn messages(ps: &Problems) -> Vec<String> {
        ps.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn same_and_lower_layers_are_fine() {
        let l = list(&[("a", &[]), ("b", &["a"]), ("c", &["a", "b"])]);
        let ps = check(
            &l,
            &layers(&[("a", Some(1)), ("b", Some(1)), ("c", Some(2))]),
        );
        assert!(ps.is_empty(), "{ps}");
        // Unlayered runs last: depending on a numbered layer is fine.
        let ps = check(&l, &layers(&[("a", Some(1)), ("b", None), ("c", None)]));
        assert!(ps.is_empty(), "{ps}");
    }

    #[test]
    fn unknown_self_and_higher_layer_are_problems_with_positions() {
        let l = list(&[
            ("a", &["a", "nope"]),
            ("b", &["c"]),
            ("c", &[]),
            ("d", &["e"]),
            ("e", &[]),
        ]);
        let ps = check(
            &l,
            &layers(&[
                ("a", Some(1)),
                ("b", Some(1)),
                ("c", Some(2)),
                ("d", Some(3)),
                ("e", None),
            ]),
        );
        let m = messages(&ps);
        assert_eq!(m.len(), 4, "{m:#?}");
        assert_eq!(
            m[0],
            "profiles.yaml: profiles[a].dependsOn[0]: profile `a` depends on itself; remove it from its dependsOn (line 6, column 17)"
        );
        assert!(
            m[1].starts_with("profiles.yaml: profiles[a].dependsOn[1]: no profile named `nope`"),
            "{}",
            m[1]
        );
        assert!(m[1].ends_with("(line 6, column 20)"), "{}", m[1]);
        assert!(
            m[2].contains("profiles[b].dependsOn[0]: `c` is in layer-2, above layer-1 of `b`"),
            "{}",
            m[2]
        );
        assert!(m[3].contains("`e` is in the unlayered group"), "{}", m[3]);
    }

    #[test]
    fn a_profile_without_a_layer_is_checked_for_existence_only() {
        let l = list(&[("a", &["b"]), ("b", &[])]);
        assert!(check(&l, &layers(&[("a", Some(1))])).is_empty());
    }

    #[test]
    fn a_cycle_is_reported_once_naming_every_member() {
        let l = list(&[("x", &[]), ("a", &["b"]), ("b", &["c"]), ("c", &["a", "x"])]);
        let all = |n| layers(&[("x", n), ("a", n), ("b", n), ("c", n)]);
        let m = messages(&check(&l, &all(Some(1))));
        assert_eq!(m.len(), 1, "{m:#?}");
        assert!(
            m[0].starts_with(
                "profiles.yaml: profiles[a].dependsOn[0]: dependsOn cycle: a -> b -> c -> a;"
            ),
            "{}",
            m[0]
        );
        assert!(m[0].ends_with("(line 8, column 17)"), "{}", m[0]);
        // Unlayered profiles form a layer too.
        assert_eq!(messages(&check(&l, &all(None))).len(), 1);
        // Two separate cycles: two problems.
        let l = list(&[("a", &["b"]), ("b", &["a"]), ("c", &["d"]), ("d", &["c"])]);
        let m = messages(&check(
            &l,
            &layers(&[
                ("a", Some(1)),
                ("b", Some(1)),
                ("c", Some(1)),
                ("d", Some(1)),
            ]),
        ));
        assert_eq!(m.len(), 2, "{m:#?}");
        assert!(m[0].contains("dependsOn cycle: a -> b -> a"), "{}", m[0]);
        assert!(m[1].contains("dependsOn cycle: c -> d -> c"), "{}", m[1]);
    }

    #[test]
    fn a_cycle_group_names_members_off_the_first_cycle() {
        // a <-> b and a <-> c: one group {a, b, c}, no single cycle through all three.
        let l = list(&[("a", &["b", "c"]), ("b", &["a"]), ("c", &["a"])]);
        let m = messages(&check(
            &l,
            &layers(&[("a", Some(1)), ("b", Some(1)), ("c", Some(1))]),
        ));
        assert_eq!(m.len(), 1, "{m:#?}");
        assert!(m[0].contains("dependsOn cycle: a -> b -> "), "{}", m[0]);
        assert!(m[0].contains("(also caught in it: c)"), "{}", m[0]);
    }

    #[test]
    fn dependencies_across_layers_make_no_cycle() {
        // a (layer 1) -> b (layer 2) is a higher-layer problem, not a cycle with b -> a.
        let l = list(&[("a", &["b"]), ("b", &["a"])]);
        let m = messages(&check(&l, &layers(&[("a", Some(1)), ("b", Some(2))])));
        assert_eq!(m.len(), 1, "{m:#?}");
        assert!(m[0].contains("above layer-1"), "{}", m[0]);
    }

    #[test]
    fn a_long_chain_and_a_big_cycle_do_not_recurse() {
        let names: Vec<String> = (0..5000).map(|i| format!("p{i}")).collect();
        let mut text = "apiVersion: strata.dev/v1alpha1\nkind: ProfileList\nprofiles:\n".to_owned();
        for (i, n) in names.iter().enumerate() {
            let dep = &names[(i + 1) % names.len()];
            text.push_str(&format!(
                "  - name: {n}\n    chart: {{path: c/{n}}}\n    dependsOn: [{dep}]\n"
            ));
        }
        let l = profiles::parse("profiles.yaml", &text).unwrap();
        let all: BTreeMap<&str, Option<LayerNumber>> = names
            .iter()
            .map(|n| (n.as_str(), Some(LayerNumber(1))))
            .collect();
        let m = messages(&check(&l, &all));
        assert_eq!(m.len(), 1);
        assert!(
            m[0].contains("p0 -> p1 -> p2"),
            "{}",
            &m[0][..200.min(m[0].len())]
        );
    }

    #[test]
    fn order_puts_dependencies_first_and_keeps_the_list_order_otherwise() {
        let deps = |n: &str| -> Vec<String> {
            match n {
                "mesh" => vec!["issuer".into(), "elsewhere".into()],
                "issuer" => vec!["certs".into()],
                _ => vec![],
            }
        };
        assert_eq!(
            order(&["mesh", "tools", "issuer", "certs"], deps),
            vec![1, 3, 2, 0]
        );
        assert_eq!(order(&["a", "b"], |_| vec![]), vec![0, 1]);
        // A cycle (rejected by check) keeps its members, at the end.
        let cyc = |n: &str| -> Vec<String> {
            match n {
                "a" => vec!["b".into()],
                "b" => vec!["a".into()],
                _ => vec![],
            }
        };
        assert_eq!(order(&["a", "b", "c"], cyc), vec![2, 0, 1]);
    }
}
