//! Reading a chart's templates (and values files) to decide whether it may have post-install or
//! post-upgrade hooks ([`strata_core::hooks`]): a chart directory of the Git checkout or a
//! built chart, or a `.tgz` from the chart cache, with its subcharts under `charts/` as
//! directories or `.tgz` archives, nested at any depth.
//!
//! Reading is bounded like the rest of the source ([`charts::MAX_ENTRY`] per file,
//! [`charts::MAX_ARCHIVE`] per nested archive, [`charts::MAX_UNPACKED`] decompressed in all);
//! anything that cannot be read within the bounds answers `true`: helm keeps waiting itself,
//! which is always safe. Nothing is rejected here.

use std::io::Read;
use std::path::Path;

use strata_core::hooks::{chart_may_have_post_hooks, scanned_file};

use crate::source::charts;

/// Most files of a chart directory (subcharts included) looked at.
const MAX_FILES: usize = 10_000;
/// Deepest nesting of subchart archives followed.
const MAX_DEPTH: usize = 8;

/// Whether the chart at `path` (a directory or a `.tgz`) may have post-install or
/// post-upgrade hooks; `true` when it cannot be read within the bounds.
pub fn chart_post_hooks(path: &Path) -> bool {
    let mut files = Files::default();
    let read = if path.is_file() {
        std::fs::File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|f| files.tgz(f, "", 0))
    } else {
        files.dir(path)
    };
    match read {
        Ok(()) => chart_may_have_post_hooks(files.read),
        Err(e) => {
            tracing::info!(chart = %path.display(), error = %e, "cannot read the chart's templates; helm waits for it (as for post hooks)");
            true
        }
    }
}

/// The files read so far and the budget left.
struct Files {
    /// (path relative to the chart, content) of the files [`scanned_file`] reads.
    read: Vec<(String, Vec<u8>)>,
    /// Bytes still allowed to be read or decompressed.
    budget: u64,
    /// Directory entries still allowed to be looked at.
    entries: usize,
}

impl Default for Files {
    fn default() -> Self {
        Self {
            read: Vec::new(),
            budget: charts::MAX_UNPACKED,
            entries: MAX_FILES,
        }
    }
}

impl Files {
    fn spend(&mut self, bytes: u64) -> Result<(), String> {
        self.budget = self
            .budget
            .checked_sub(bytes)
            .ok_or_else(|| format!("more than {} bytes", charts::MAX_UNPACKED))?;
        Ok(())
    }

    /// A chart directory (symlinks followed, as helm follows them; the checkout's were checked
    /// to stay inside the chart).
    fn dir(&mut self, root: &Path) -> Result<(), String> {
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
                self.entries = self
                    .entries
                    .checked_sub(1)
                    .ok_or_else(|| format!("more than {MAX_FILES} files"))?;
                let p = entry.path();
                if entry.file_name() == ".git" {
                    continue;
                }
                let meta = std::fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                let rel = p
                    .strip_prefix(root)
                    .unwrap_or(&p)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                if meta.is_dir() {
                    dirs.push(p);
                } else if let Some(prefix) = subchart_archive(&rel) {
                    if meta.len() > charts::MAX_ARCHIVE as u64 {
                        return Err(format!("{} is too large", p.display()));
                    }
                    let f = std::fs::File::open(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                    self.tgz(f, &prefix, 1)
                        .map_err(|e| format!("{}: {e}", p.display()))?;
                } else if scanned_file(&rel).is_some() {
                    if meta.len() > charts::MAX_ENTRY {
                        return Err(format!("{} is too large", p.display()));
                    }
                    self.spend(meta.len())?;
                    let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                    self.read.push((rel, bytes));
                }
            }
        }
        Ok(())
    }

    /// A chart archive whose chart directory (the entries' first component) is at `prefix`
    /// (`""` for the chart itself, `charts/<sub>/` for a subchart).
    fn tgz(&mut self, archive: impl Read, prefix: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("subcharts nested deeper than {MAX_DEPTH}"));
        }
        let gz = flate2::read::GzDecoder::new(archive).take(self.budget + 1);
        let mut tar = tar::Archive::new(gz);
        let entries = tar
            .entries()
            .map_err(|e| format!("not a gzip tar archive: {e}"))?;
        let mut nested = Vec::new();
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("corrupt archive: {e}"))?;
            if !entry.header().entry_type().is_file() {
                // Directories; links read as nothing by helm.
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| format!("bad entry path: {e}"))?
                .into_owned();
            // Without the chart's directory.
            let rel = path
                .components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .skip(1)
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let size = entry.header().size().unwrap_or(u64::MAX);
            if let Some(sub) = subchart_archive(&rel) {
                if size > charts::MAX_ARCHIVE as u64 {
                    return Err(format!("{rel} is too large"));
                }
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(size)
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("{rel}: {e}"))?;
                nested.push((format!("{prefix}{sub}"), bytes));
            } else if scanned_file(&rel).is_some() {
                if size > charts::MAX_ENTRY {
                    return Err(format!("{rel} is larger than {} bytes", charts::MAX_ENTRY));
                }
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(size)
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("{rel}: {e}"))?;
                self.read.push((format!("{prefix}{rel}"), bytes));
            }
        }
        let left = tar.into_inner().limit();
        if left == 0 {
            return Err(format!(
                "more than {} bytes decompressed",
                charts::MAX_UNPACKED
            ));
        }
        // What this archive decompressed is spent (its entries were read through it).
        self.budget = (left - 1).min(self.budget);
        for (sub, bytes) in nested {
            self.tgz(bytes.as_slice(), &sub, depth + 1)
                .map_err(|e| format!("{sub}: {e}"))?;
        }
        Ok(())
    }
}

/// `charts/<name>/` for a subchart archive at `rel` (`charts/<name>.tgz`, at any depth of
/// subcharts), as its templates are addressed.
fn subchart_archive(rel: &str) -> Option<String> {
    let (dir, file) = rel.rsplit_once('/')?;
    let stem = file
        .strip_suffix(".tgz")
        .or_else(|| file.strip_suffix(".tar.gz"))?;
    let parts: Vec<&str> = dir.split('/').collect();
    // `charts`, or `charts/<sub>/charts`, ...: an odd number of parts alternating.
    let is_charts_dir = parts.len() % 2 == 1
        && parts
            .iter()
            .enumerate()
            .all(|(i, p)| i % 2 == 1 || *p == "charts");
    is_charts_dir.then(|| format!("{dir}/{stem}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST: &str = "kind: Job\nmetadata:\n  annotations:\n    helm.sh/hook: post-install\n";
    const PRE: &str = "kind: Job\nmetadata:\n  annotations:\n    helm.sh/hook: pre-install\n";

    fn tgz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn write(dir: &Path, rel: &str, data: &[u8]) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn subchart_archive_paths() {
        assert_eq!(
            subchart_archive("charts/db-1.0.0.tgz").as_deref(),
            Some("charts/db-1.0.0/")
        );
        assert_eq!(
            subchart_archive("charts/db/charts/x.tgz").as_deref(),
            Some("charts/db/charts/x/")
        );
        assert_eq!(subchart_archive("db.tgz"), None);
        assert_eq!(subchart_archive("files/db.tgz"), None);
        assert_eq!(subchart_archive("charts/db/x.tgz"), None);
        assert_eq!(subchart_archive("charts/db.yaml"), None);
    }

    #[test]
    fn directories_with_subchart_directories_and_archives() {
        let dir = tempfile::tempdir().unwrap();
        let chart = dir.path().join("app");
        write(&chart, "Chart.yaml", b"name: app\nversion: 1.0.0\n");
        write(&chart, "templates/job.yaml", PRE.as_bytes());
        write(&chart, "crds/job.yaml", POST.as_bytes());
        write(&chart, "README.md", POST.as_bytes());
        assert!(!chart_post_hooks(&chart));
        write(&chart, "charts/db/templates/job.yaml", PRE.as_bytes());
        assert!(!chart_post_hooks(&chart));
        let sub = tgz(&[
            ("cache/Chart.yaml", b"name: cache\n"),
            ("cache/templates/job.yaml", POST.as_bytes()),
        ]);
        write(&chart, "charts/cache-1.0.0.tgz", &sub);
        assert!(chart_post_hooks(&chart), "the subchart archive's hook");
        std::fs::remove_file(chart.join("charts/cache-1.0.0.tgz")).unwrap();
        write(&chart, "charts/db/templates/_helpers.tpl", POST.as_bytes());
        assert!(chart_post_hooks(&chart), "the subchart directory's helper");
    }

    #[test]
    fn archives_with_nested_subchart_archives() {
        let dir = tempfile::tempdir().unwrap();
        let inner = |hook: &str| {
            tgz(&[
                ("db/Chart.yaml", b"name: db\n"),
                ("db/templates/job.yaml", hook.as_bytes()),
            ])
        };
        let outer = |sub: &[u8]| {
            tgz(&[
                ("app/Chart.yaml", b"name: app\n"),
                ("app/templates/cm.yaml", b"kind: ConfigMap\n"),
                ("app/crds/x.yaml", POST.as_bytes()),
                ("app/charts/db-1.0.0.tgz", sub),
            ])
        };
        let path = dir.path().join("app-1.0.0.tgz");
        std::fs::write(&path, outer(&inner(PRE))).unwrap();
        assert!(!chart_post_hooks(&path));
        std::fs::write(&path, outer(&inner(POST))).unwrap();
        assert!(chart_post_hooks(&path));
        // Deeper: db's own subchart.
        let deep = tgz(&[
            ("db/Chart.yaml", b"name: db\n"),
            ("db/charts/m.tgz", &inner(POST)),
        ]);
        std::fs::write(&path, outer(&deep)).unwrap();
        assert!(chart_post_hooks(&path));
    }

    #[test]
    fn unreadable_or_oversized_charts_keep_helm_waiting() {
        let dir = tempfile::tempdir().unwrap();
        assert!(chart_post_hooks(&dir.path().join("missing")));
        let path = dir.path().join("broken.tgz");
        std::fs::write(&path, b"not an archive").unwrap();
        assert!(chart_post_hooks(&path));
        let big = vec![b'a'; charts::MAX_ENTRY as usize + 1];
        std::fs::write(&path, tgz(&[("app/templates/big.yaml", &big)])).unwrap();
        assert!(chart_post_hooks(&path));
        let chart = dir.path().join("app");
        write(&chart, "templates/big.yaml", &big);
        assert!(chart_post_hooks(&chart));
        // A large file that is not read does not matter.
        let chart = dir.path().join("other");
        write(&chart, "files/big.bin", &big);
        assert!(!chart_post_hooks(&chart));
    }
}
