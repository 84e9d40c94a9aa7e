//! Credentials shared by every source: HTTP basic auth for the Git server and for chart
//! repositories. One type, one place where a password is kept out of `Debug` output.

use std::path::{Path, PathBuf};

use base64::Engine as _;

/// HTTP basic auth (a token goes in `password`). `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BasicAuth({}, ***)", self.username)
    }
}

/// Where the basic-auth username comes from.
pub enum UsernameSource<'a> {
    Value(&'a str),
    File(&'a Path),
}

/// A credentials file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("could not read credentials from {}: {source}", path.display())]
pub struct CredentialsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl BasicAuth {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// Reads the password (or token) from a file (trailing newline removed); the username
    /// from a file too, or `username` (e.g. `git` for token-only servers).
    pub fn from_files(
        username: UsernameSource<'_>,
        password_file: &Path,
    ) -> Result<Self, CredentialsError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|source| CredentialsError {
                    path: p.to_path_buf(),
                    source,
                })
        };
        let username = match username {
            UsernameSource::Value(v) => v.to_string(),
            UsernameSource::File(p) => read(p)?,
        };
        Ok(Self {
            username,
            password: read(password_file)?,
        })
    }

    /// `base64(username:password)`, the credential of an `Authorization: Basic` header (a
    /// secret too: register it with the redactor wherever the header may be echoed).
    pub fn encoded(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password))
    }

    /// The value of an `Authorization` header: `Basic base64(username:password)`.
    pub fn header_value(&self) -> String {
        format!("Basic {}", self.encoded())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let b = BasicAuth::new("ci", "s3cret-token");
        let shown = format!("{b:?}");
        assert!(shown.contains("ci") && !shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn header_value_is_basic_base64() {
        assert_eq!(
            BasicAuth::new("Aladdin", "open sesame").header_value(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn reads_files_trimming_the_newline_and_names_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("u"), "robot\n").unwrap();
        std::fs::write(dir.path().join("p"), "tok\r\n").unwrap();
        let b = BasicAuth::from_files(
            UsernameSource::File(&dir.path().join("u")),
            &dir.path().join("p"),
        )
        .unwrap();
        assert_eq!((b.username.as_str(), b.password.as_str()), ("robot", "tok"));
        let b = BasicAuth::from_files(UsernameSource::Value("git"), &dir.path().join("p")).unwrap();
        assert_eq!(b.username, "git");
        let err = BasicAuth::from_files(UsernameSource::Value("git"), &dir.path().join("nope"))
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
