//! Symlinks in what a revision uses, resolved without ever following one out of bounds.
//!
//! helm follows symlinks when it loads a chart directory, so a chart committed with
//! `leak.txt -> /etc/something` and `{{ .Files.Get "leak.txt" }}` would install a file of the
//! agent's into the cluster. Every path a revision uses is therefore resolved here, one
//! component at a time, like the kernel does, but inside a *bound*: the repository for the
//! profile list, values and allocation files, the chart directory for a chart's files. A
//! symlink whose target is absolute, climbs out of the bound, loops, or (for charts) points to
//! nothing makes the revision invalid; the problem names the symlink and its link text, never
//! what the target holds.
//!
//! The logic ([`Resolver`]) asks for one path at a time, so the same code walks a Git tree
//! (`git ls-tree`, async), a checkout on disk and the entries of a chart archive.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// Most symlinks followed while resolving one path (Linux's limit).
pub const MAX_HOPS: usize = 40;
/// Longest symlink target read (Linux's `PATH_MAX`).
pub const MAX_LINK: usize = 4096;

/// What a path names, as far as resolution needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Missing,
    File,
    Dir,
    /// A symlink and its link text.
    Symlink(String),
    /// Anything else (a submodule, a device): not a file, not a directory.
    Other,
}

/// What a path resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A file, directory or other node at this path (relative to the root, `""` for the root),
    /// reached through symlinks or not.
    Found { path: String, node: Node },
    /// Nothing there and no symlink on the way: plainly missing.
    Missing,
}

/// Why a symlink may not be followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkFault {
    /// Its target is an absolute path.
    Absolute,
    /// Its target climbs out of the bound.
    OutOfBounds,
    /// More than [`MAX_HOPS`] symlinks: a loop.
    Loop,
    /// Its target (this path) does not exist.
    Dangling { resolved: String },
}

/// A symlink met while resolving `path` that may not be followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkError {
    /// The path asked for.
    pub path: String,
    /// The symlink at fault (may be `path` itself, or one on the way).
    pub link: String,
    /// Its link text.
    pub target: String,
    pub fault: LinkFault,
}

impl LinkError {
    /// The message, `bound` naming what the link must stay in ("the repository", "the chart
    /// directory charts/demo"). Names the link and its text, never the target's contents.
    pub fn describe(&self, bound: &str) -> String {
        let via = if self.link == self.path {
            format!("{} is a symlink to {}", self.path, self.target)
        } else {
            format!(
                "{} goes through the symlink {} -> {}",
                self.path, self.link, self.target
            )
        };
        match &self.fault {
            LinkFault::Absolute => format!(
                "out-of-bounds symlink: {via}, an absolute path outside {bound}; a symlink must be relative and stay inside {bound}"
            ),
            LinkFault::OutOfBounds => format!(
                "out-of-bounds symlink: {via}, which points outside {bound}; a symlink must stay inside {bound}"
            ),
            LinkFault::Loop => {
                format!("{via}: more than {MAX_HOPS} symlinks followed, a symlink loop")
            }
            LinkFault::Dangling { resolved } => {
                format!("{via}, but {resolved} does not exist")
            }
        }
    }
}

/// One step of a [`Resolver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Tell me what this path (relative to the root) is: [`Resolver::answer`].
    Lookup(String),
    Done(Result<Resolved, LinkError>),
}

/// Resolves a path under a root like the kernel does (`..` of a real directory is its real
/// parent), refusing any symlink whose target is absolute or leaves the bound.
#[derive(Clone, Debug)]
pub struct Resolver {
    /// The path asked for, as given.
    path: String,
    /// The bound's components: nothing resolved may leave it.
    bound: Vec<String>,
    /// Components resolved so far (real directories).
    done: Vec<String>,
    /// Components still to resolve, each with the symlink its text came from (an index in
    /// `links`; `None`: the path asked for).
    pending: VecDeque<(String, Option<usize>)>,
    hops: usize,
    /// The symlinks followed, and their texts.
    links: Vec<(String, String)>,
    /// The candidate being looked up.
    waiting: Option<String>,
}

fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
}

fn join(parts: &[String]) -> String {
    parts.join("/")
}

impl Resolver {
    /// Resolves `path` (relative to the root), staying inside `bound` (a directory relative
    /// to the root, `""` for the root itself; `path` is inside it).
    pub fn new(path: &str, bound: &str) -> Self {
        let bound: Vec<String> = components(bound).collect();
        let mut pending: VecDeque<(String, Option<usize>)> =
            components(path).map(|c| (c, None)).collect();
        // `path` lies in the bound: start from the bound (already resolved by the caller).
        let starts_in_bound =
            pending.len() >= bound.len() && pending.iter().zip(&bound).all(|(a, b)| a.0 == *b);
        let done = if starts_in_bound {
            pending.drain(..bound.len());
            bound.clone()
        } else {
            Vec::new()
        };
        Self {
            path: path.trim_matches('/').to_string(),
            bound,
            done,
            pending,
            hops: 0,
            links: Vec::new(),
            waiting: None,
        }
    }

    fn in_bound(&self, parts: &[String]) -> bool {
        parts.len() >= self.bound.len() && parts[..self.bound.len()] == self.bound[..]
    }

    /// A fault of the symlink `blame` (an index in `links`), by default the last one followed.
    fn fault(&self, fault: LinkFault, blame: Option<usize>) -> Step {
        let (link, target) = blame
            .or(self.links.len().checked_sub(1))
            .and_then(|i| self.links.get(i).cloned())
            .unwrap_or_default();
        Step::Done(Err(LinkError {
            path: self.path.clone(),
            link,
            target,
            fault,
        }))
    }

    /// The next path to look up, or the result.
    pub fn step(&mut self) -> Step {
        while let Some((c, origin)) = self.pending.pop_front() {
            if c == ".." {
                if self.done.pop().is_none() || !self.in_bound(&self.done) {
                    return self.fault(LinkFault::OutOfBounds, origin);
                }
                continue;
            }
            let mut candidate = self.done.clone();
            candidate.push(c);
            if !self.in_bound(&candidate) {
                return self.fault(LinkFault::OutOfBounds, origin);
            }
            let candidate = join(&candidate);
            self.waiting = Some(candidate.clone());
            return Step::Lookup(candidate);
        }
        // Only directories are pushed on `done` (a file ends the walk in `answer`).
        Step::Done(Ok(Resolved::Found {
            path: join(&self.done),
            node: Node::Dir,
        }))
    }

    /// What the path of the last [`Step::Lookup`] is; then call [`Resolver::step`] again.
    pub fn answer(&mut self, node: Node) -> Option<Step> {
        let candidate = self.waiting.take().expect("answer follows a lookup");
        let name = candidate
            .rsplit('/')
            .next()
            .unwrap_or(&candidate)
            .to_string();
        match node {
            Node::Missing => Some(if self.links.is_empty() {
                Step::Done(Ok(Resolved::Missing))
            } else {
                self.fault(
                    LinkFault::Dangling {
                        resolved: candidate,
                    },
                    None,
                )
            }),
            Node::Dir => {
                self.done.push(name);
                None
            }
            Node::File | Node::Other => {
                if self.pending.is_empty() {
                    Some(Step::Done(Ok(Resolved::Found {
                        path: candidate,
                        node,
                    })))
                } else {
                    // `file/more`: not a directory.
                    Some(if self.links.is_empty() {
                        Step::Done(Ok(Resolved::Missing))
                    } else {
                        self.fault(
                            LinkFault::Dangling {
                                resolved: candidate,
                            },
                            None,
                        )
                    })
                }
            }
            Node::Symlink(target) => {
                self.hops += 1;
                self.links.push((candidate, target.clone()));
                let me = Some(self.links.len() - 1);
                if self.hops > MAX_HOPS {
                    return Some(self.fault(LinkFault::Loop, me));
                }
                if target.starts_with('/') || target.is_empty() || target.len() > MAX_LINK {
                    return Some(self.fault(LinkFault::Absolute, me));
                }
                // The target is relative to the link's directory (`done`).
                for c in target.split('/').rev() {
                    if !c.is_empty() && c != "." {
                        self.pending.push_front((c.to_string(), me));
                    }
                }
                None
            }
        }
    }

    /// Resolves with a synchronous lookup.
    pub fn run(mut self, mut lookup: impl FnMut(&str) -> Node) -> Result<Resolved, LinkError> {
        loop {
            match self.step() {
                Step::Done(r) => return r,
                Step::Lookup(p) => {
                    if let Some(Step::Done(r)) = self.answer(lookup(&p)) {
                        return r;
                    }
                }
            }
        }
    }
}

/// Resolves `path` under `bound` (both relative to the root) with `lookup`.
pub fn resolve(
    path: &str,
    bound: &str,
    lookup: impl FnMut(&str) -> Node,
) -> Result<Resolved, LinkError> {
    Resolver::new(path, bound).run(lookup)
}

/// What `root/rel` is on disk (never following a symlink).
pub fn fs_node(root: &Path, rel: &str) -> Node {
    let path = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    match std::fs::symlink_metadata(&path) {
        Err(_) => Node::Missing,
        Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&path) {
            Ok(t) => Node::Symlink(t.to_string_lossy().into_owned()),
            Err(_) => Node::Missing,
        },
        Ok(m) if m.is_dir() => Node::Dir,
        Ok(m) if m.is_file() => Node::File,
        Ok(_) => Node::Other,
    }
}

/// The chart directory `chart_dir` of a checkout, resolved inside the repository, with every
/// symlink in it checked: each must stay inside the chart directory (a symlink to a file or
/// directory of the chart is fine, helm supports them), must not dangle, and must not point
/// to a directory enclosing it (helm would walk it forever). The directory helm gets, or
/// the problems (messages naming each symlink and its text). A `chart_dir` that does not
/// exist comes back as is: reading its Chart.yaml reports it.
pub fn check_chart_dir(checkout: &Path, chart_dir: &str) -> Result<PathBuf, Vec<String>> {
    let resolved = match resolve(chart_dir, "", |p| fs_node(checkout, p)) {
        Ok(Resolved::Missing) => return Ok(checkout.join(chart_dir)),
        Ok(Resolved::Found {
            path,
            node: Node::Dir,
        }) => path,
        Ok(Resolved::Found { path, .. }) => {
            return Err(vec![format!(
                "the chart path {chart_dir} is not a directory ({path} is a file)"
            )]);
        }
        Err(e) => return Err(vec![e.describe("the repository")]),
    };
    let bound = format!("the chart directory {resolved}");
    let mut problems = Vec::new();
    let mut stack = vec![resolved.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(checkout.join(&dir)) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let rel = format!("{dir}/{}", entry.file_name().to_string_lossy());
            match fs_node(checkout, &rel) {
                Node::Dir => stack.push(rel),
                Node::Symlink(_) => match resolve(&rel, &resolved, |p| fs_node(checkout, p)) {
                    Err(e) => problems.push(e.describe(&bound)),
                    Ok(Resolved::Found {
                        path,
                        node: Node::Dir,
                    }) if dir == path || dir.starts_with(&format!("{path}/")) => {
                        problems.push(format!(
                            "{rel} is a symlink to {}, a directory enclosing it; helm would walk it forever",
                            fs_link_text(checkout, &rel)
                        ));
                    }
                    Ok(_) => {}
                },
                _ => {}
            }
        }
    }
    if problems.is_empty() {
        Ok(checkout.join(resolved))
    } else {
        Err(problems)
    }
}

fn fs_link_text(root: &Path, rel: &str) -> String {
    std::fs::read_link(root.join(rel))
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A tree from `path -> node` (parent directories implied).
    fn tree(entries: &[(&str, Node)]) -> impl Fn(&str) -> Node + use<> {
        let mut map: BTreeMap<String, Node> = BTreeMap::new();
        for (p, n) in entries {
            let parts: Vec<&str> = p.split('/').collect();
            for i in 1..parts.len() {
                map.entry(parts[..i].join("/")).or_insert(Node::Dir);
            }
            map.insert(p.to_string(), n.clone());
        }
        move |p: &str| map.get(p).cloned().unwrap_or(Node::Missing)
    }

    fn link(t: &str) -> Node {
        Node::Symlink(t.to_string())
    }

    fn found(path: &str, node: Node) -> Result<Resolved, LinkError> {
        Ok(Resolved::Found {
            path: path.to_string(),
            node,
        })
    }

    #[test]
    fn plain_paths_resolve_without_links() {
        let t = tree(&[("a/b.yaml", Node::File)]);
        assert_eq!(resolve("a/b.yaml", "", &t), found("a/b.yaml", Node::File));
        assert_eq!(resolve("a", "", &t), found("a", Node::Dir));
        assert_eq!(resolve("a/c.yaml", "", &t), Ok(Resolved::Missing));
        assert_eq!(resolve("a/b.yaml/x", "", &t), Ok(Resolved::Missing));
    }

    #[test]
    fn links_inside_the_bound_are_followed() {
        let t = tree(&[
            ("common/values.yaml", Node::File),
            ("clusters/a/values.yaml", link("../../common/values.yaml")),
            // A chain: b -> a's link -> the file.
            ("clusters/b/values.yaml", link("../a/values.yaml")),
            // A link to a directory, then a file in it.
            ("clusters/c", link("../common")),
            ("charts/demo/files/real.txt", Node::File),
            ("charts/demo/in.txt", link("files/real.txt")),
            ("charts/demo/dot.txt", link("./files/../files/real.txt")),
            ("charts/demo/sub", link("files")),
        ]);
        for p in ["clusters/a/values.yaml", "clusters/b/values.yaml"] {
            assert_eq!(
                resolve(p, "", &t),
                found("common/values.yaml", Node::File),
                "{p}"
            );
        }
        assert_eq!(
            resolve("clusters/c/values.yaml", "", &t),
            found("common/values.yaml", Node::File)
        );
        for p in ["charts/demo/in.txt", "charts/demo/dot.txt"] {
            assert_eq!(
                resolve(p, "charts/demo", &t),
                found("charts/demo/files/real.txt", Node::File),
                "{p}"
            );
        }
        assert_eq!(
            resolve("charts/demo/sub", "charts/demo", &t),
            found("charts/demo/files", Node::Dir)
        );
    }

    #[test]
    fn escaping_links_are_refused() {
        let t = tree(&[
            ("charts/demo/abs", link("/etc/passwd")),
            ("charts/demo/up", link("../../../outside")),
            ("charts/demo/sibling", link("../other/file")),
            ("charts/other/file", Node::File),
            ("charts/demo/chain1", link("chain2")),
            ("charts/demo/chain2", link("../../..")),
            ("charts/demo/dir", link("..")),
            ("charts/demo/loop1", link("loop2")),
            ("charts/demo/loop2", link("loop1")),
            ("charts/demo/dangling", link("nope.txt")),
            ("charts/demo/self", link(".")),
            // `self/../..` leaves the chart through a link to its own directory.
            ("charts/demo/trick", link("self/../../../x")),
            ("top", link("..")),
        ]);
        let fault = |p: &str, bound: &str| resolve(p, bound, &t).unwrap_err();
        let e = fault("charts/demo/abs", "charts/demo");
        assert_eq!(
            (e.fault.clone(), e.target.as_str()),
            (LinkFault::Absolute, "/etc/passwd")
        );
        let msg = e.describe("the chart directory charts/demo");
        assert!(
            msg.contains("charts/demo/abs is a symlink to /etc/passwd"),
            "{msg}"
        );
        assert!(msg.contains("out-of-bounds symlink"), "{msg}");
        assert_eq!(
            fault("charts/demo/up", "charts/demo").fault,
            LinkFault::OutOfBounds
        );
        assert_eq!(fault("charts/demo/up", "").fault, LinkFault::OutOfBounds);
        // Inside the repository, outside the chart.
        assert_eq!(
            fault("charts/demo/sibling", "charts/demo").fault,
            LinkFault::OutOfBounds
        );
        assert_eq!(
            resolve("charts/demo/sibling", "", &t),
            found("charts/other/file", Node::File)
        );
        let e = fault("charts/demo/chain1", "charts/demo");
        assert_eq!(
            (e.link.as_str(), e.target.as_str(), e.fault.clone()),
            ("charts/demo/chain2", "../../..", LinkFault::OutOfBounds)
        );
        assert!(
            e.describe("x")
                .contains("goes through the symlink charts/demo/chain2 -> ../../..")
        );
        assert_eq!(
            fault("charts/demo/dir", "charts/demo").fault,
            LinkFault::OutOfBounds
        );
        assert_eq!(
            fault("charts/demo/loop1", "charts/demo").fault,
            LinkFault::Loop
        );
        assert_eq!(
            fault("charts/demo/dangling", "charts/demo").fault,
            LinkFault::Dangling {
                resolved: "charts/demo/nope.txt".into()
            }
        );
        assert_eq!(
            fault("charts/demo/trick", "charts/demo").fault,
            LinkFault::OutOfBounds
        );
        assert_eq!(fault("top/x", "").fault, LinkFault::OutOfBounds);
    }

    #[cfg(unix)]
    #[test]
    fn chart_directories_on_disk() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "SENTINEL").unwrap();
        let chart = root.join("charts/demo");
        std::fs::create_dir_all(chart.join("files")).unwrap();
        std::fs::write(chart.join("Chart.yaml"), "name: demo\n").unwrap();
        std::fs::write(chart.join("files/a.txt"), "a").unwrap();
        symlink("files/a.txt", chart.join("in.txt")).unwrap();
        symlink("files", chart.join("more")).unwrap();
        std::fs::create_dir_all(root.join("linked")).unwrap();
        symlink("../charts/demo", root.join("linked/demo")).unwrap();
        assert_eq!(check_chart_dir(root, "charts/demo").unwrap(), chart);
        // The chart path may itself be a symlink inside the repository.
        assert_eq!(check_chart_dir(root, "linked/demo").unwrap(), chart);
        assert_eq!(
            check_chart_dir(root, "charts/missing").unwrap(),
            root.join("charts/missing")
        );

        let target = outside.path().join("secret.txt");
        symlink(&target, chart.join("files/leak.txt")).unwrap();
        symlink("../../../..", chart.join("files/up")).unwrap();
        symlink("..", chart.join("files/loop")).unwrap();
        let problems = check_chart_dir(root, "charts/demo").unwrap_err();
        let all = problems.join("\n");
        assert_eq!(problems.len(), 3, "{all}");
        assert!(
            all.contains(&format!(
                "charts/demo/files/leak.txt is a symlink to {}",
                target.display()
            )),
            "{all}"
        );
        assert!(
            all.contains("charts/demo/files/up is a symlink to ../../../.."),
            "{all}"
        );
        assert!(
            all.contains("charts/demo/files/loop is a symlink to .., a directory enclosing it"),
            "{all}"
        );
        assert!(
            all.contains("outside the chart directory charts/demo"),
            "{all}"
        );
        assert!(!all.contains("SENTINEL"));

        symlink("/etc", root.join("abs")).unwrap();
        let p = check_chart_dir(root, "abs/x").unwrap_err();
        assert!(
            p[0].contains("abs/x goes through the symlink abs -> /etc"),
            "{p:?}"
        );
    }
}
