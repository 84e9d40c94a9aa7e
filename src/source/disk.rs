//! Messages for file system errors of the caches: a full disk names the directory, so the
//! operator knows which volume to grow (the loader keeps serving the last good revision).

use std::path::Path;

/// Whether `e` says the file system is full (ENOSPC) or the quota is used up (EDQUOT).
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(28) | Some(122))
}

/// Whether a tool's message (git's stderr) says the disk is full.
pub fn mentions_no_space(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("no space left on device") || m.contains("disk quota exceeded")
}

/// The directory of `path`: itself when it is one (or ends in `/`), else its parent.
fn dir_of(path: &Path) -> &Path {
    if path.is_dir() {
        path
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(path)
    }
}

/// `e` on `path`: "no space left on device in <dir> (writing <path>)" when the disk is full,
/// else "<path>: <e>".
pub fn describe(path: &Path, e: &std::io::Error) -> String {
    if is_no_space(e) {
        no_space(dir_of(path), &format!("writing {}", path.display()))
    } else {
        format!("{}: {e}", path.display())
    }
}

/// "no space left on device in <dir> (<context>); free space or grow the volume of the work
/// dir".
pub fn no_space(dir: &Path, context: &str) -> String {
    format!(
        "no space left on device in {} ({context}); free space or grow the volume of the work dir (--work-dir)",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_names_the_directory() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("sha256").join("abc.tgz");
        let enospc = std::io::Error::from_raw_os_error(28);
        let m = describe(&file, &enospc);
        assert!(
            m.starts_with(&format!(
                "no space left on device in {}",
                d.path().join("sha256").display()
            )),
            "{m}"
        );
        assert!(m.contains("abc.tgz"), "{m}");
        // A directory names itself.
        let m = describe(d.path(), &std::io::Error::from_raw_os_error(122));
        assert!(
            m.starts_with(&format!(
                "no space left on device in {} (",
                d.path().display()
            )),
            "{m}"
        );
        // Anything else is the plain error.
        let m = describe(&file, &std::io::Error::from_raw_os_error(13));
        assert!(m.contains("abc.tgz: Permission denied"), "{m}");
        assert!(mentions_no_space(
            "error: unable to write file: No space left on device"
        ));
        assert!(!mentions_no_space("fatal: couldn't find remote ref main"));
    }
}
