//! Validation problems: what is wrong, in which file, at which field.
//!
//! Every parser in this crate collects *all* problems it finds and returns them at once as
//! [`Problems`], so a user fixes a bad revision in one round.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One thing wrong with an input.
///
/// `field` is a path such as `profiles[cert-manager].chart.version` (the profile's name is used
/// once it is known, its index otherwise: `profiles[2]`). An empty `field` means the whole file.
/// `line`/`column` (1-based) point into the file when the position is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub file: String,
    pub field: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl Problem {
    /// A problem without a known position. The file, field and message are made safe to show:
    /// control and bidirectional-override characters are escaped (`\u{1b}`), a word longer
    /// than [`MAX_WORD`] characters is shortened, and the field and message are capped at
    /// [`MAX_FIELD`] and [`MAX_MESSAGE`] characters, so a hostile input is never echoed at
    /// length or able to rewrite a terminal line.
    pub fn new(
        file: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: shown(&file.into(), MAX_FIELD),
            field: shown(&field.into(), MAX_FIELD),
            message: shown(&message.into(), MAX_MESSAGE),
            line: None,
            column: None,
        }
    }

    /// Attach a 1-based line and column (0 means unknown and is ignored).
    #[must_use]
    pub fn at(mut self, line: u32, column: u32) -> Self {
        if line > 0 {
            self.line = Some(line);
            self.column = (column > 0).then_some(column);
        }
        self
    }
}

/// `file: field: message (line L, column C)`; the field part is left out when empty.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)?;
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
            (Some(l), None) => write!(f, " (line {l})"),
            _ => Ok(()),
        }
    }
}

/// Most problems kept for one input; the rest are counted in a last entry.
pub const MAX_PROBLEMS: usize = 100;
const MORE_SUFFIX: &str = " more problem(s) not shown; fix the ones above and validate again";

/// Longest word (run of characters without white space) shown in a problem.
pub const MAX_WORD: usize = 120;
/// Longest field shown in a problem.
pub const MAX_FIELD: usize = 300;
/// Longest message shown in a problem.
pub const MAX_MESSAGE: usize = 600;

fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != ' ')
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// `text` made safe to show: unsafe characters escaped, long words shortened, at most `max`
/// characters.
pub fn shown(text: &str, max: usize) -> String {
    if text.chars().count() <= MAX_WORD && !text.chars().any(unsafe_char) {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut word = String::new();
    let mut word_len = 0usize;
    let flush = |out: &mut String, word: &mut String, len: &mut usize| {
        if *len > MAX_WORD {
            let head: String = word.chars().take(MAX_WORD / 2).collect();
            out.push_str(&head);
            out.push_str(&format!("…({len} characters)"));
        } else {
            out.push_str(word);
        }
        word.clear();
        *len = 0;
    };
    for c in text.chars() {
        if c.is_whitespace() && !unsafe_char(c) || c == ' ' {
            flush(&mut out, &mut word, &mut word_len);
            out.push(c);
            continue;
        }
        word_len += 1;
        if word_len <= MAX_WORD + 1 {
            if unsafe_char(c) {
                word.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            } else {
                word.push(c);
            }
        }
    }
    flush(&mut out, &mut word, &mut word_len);
    if out.chars().count() > max {
        let mut cut: String = out.chars().take(max.saturating_sub(20)).collect();
        cut.push_str("… (shortened)");
        return cut;
    }
    out
}

/// A non-empty list of problems; the error type of every parser and of the planner.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn new() -> Self {
        Self(Vec::new())
    }
    /// Adds a problem. Past [`MAX_PROBLEMS`], one last entry counts the problems not kept, so
    /// a hostile file (thousands of duplicate keys) cannot flood logs or the status.
    pub fn push(&mut self, p: Problem) {
        let n = self.0.len();
        if n < MAX_PROBLEMS {
            self.0.push(p);
            return;
        }
        let hidden = match self.0.last() {
            Some(last) if n > MAX_PROBLEMS && last.field.is_empty() => last
                .message
                .strip_suffix(MORE_SUFFIX)
                .and_then(|c| c.split(' ').next())
                .and_then(|c| c.parse::<usize>().ok()),
            _ => None,
        };
        let message = |count: usize| format!("{count}{MORE_SUFFIX}");
        match hidden {
            Some(count) => {
                if let Some(last) = self.0.last_mut() {
                    last.message = message(count + 1);
                }
            }
            None => self.0.push(Problem::new(p.file, "", message(1))),
        }
    }
    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }
    /// `Ok(value)` when no problem was recorded, the problems otherwise.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<Problem> for Problems {
    fn from(p: Problem) -> Self {
        Self(vec![p])
    }
}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// One problem per line.
impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_position() {
        let p = Problem::new("profiles.yaml", "profiles[a].version", "bad range");
        assert_eq!(
            p.to_string(),
            "profiles.yaml: profiles[a].version: bad range"
        );
        let p = p.at(3, 7);
        assert_eq!(
            p.to_string(),
            "profiles.yaml: profiles[a].version: bad range (line 3, column 7)"
        );
        let whole = Problem::new("f.yaml", "", "empty file");
        assert_eq!(whole.to_string(), "f.yaml: empty file");
    }

    #[test]
    fn hostile_text_is_shown_safely() {
        let cases: Vec<(String, String)> = vec![
            ("plain `text`".into(), "plain `text`".into()),
            ("a\u{7}b".into(), "a\\u{7}b".into()),
            ("`\u{1b}[31mred`".into(), "`\\u{1b}[31mred`".into()),
            ("new\nline".into(), "new\\u{a}line".into()),
            ("rtl \u{202E}txt".into(), "rtl \\u{202e}txt".into()),
            (
                format!("name `{}` is bad", "a".repeat(70_000)),
                format!("name `{}…(70002 characters) is bad", "a".repeat(59)),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(shown(&input, MAX_MESSAGE), expected);
        }
        let many_words = "word ".repeat(1000);
        let s = shown(&many_words, MAX_MESSAGE);
        assert!(s.chars().count() <= MAX_MESSAGE, "{}", s.len());
        assert!(s.ends_with("… (shortened)"));
        let p = Problem::new(
            "v/\u{1b}[2J.yaml",
            "a.\u{1b}x",
            format!("`{}`", "z".repeat(5000)),
        );
        assert_eq!(p.file, "v/\\u{1b}[2J.yaml");
        assert_eq!(p.field, "a.\\u{1b}x");
        assert!(p.message.len() < 200, "{}", p.message);
        assert!(p.message.contains("(5002 characters)"), "{}", p.message);
    }

    #[test]
    fn problems_past_the_cap_are_counted() {
        let mut ps = Problems::new();
        for i in 0..MAX_PROBLEMS + 250 {
            ps.push(Problem::new("f.yaml", format!("k{i}"), "dup"));
        }
        assert_eq!(ps.len(), MAX_PROBLEMS + 1);
        assert_eq!(
            ps.0[MAX_PROBLEMS - 1].field,
            format!("k{}", MAX_PROBLEMS - 1)
        );
        assert_eq!(
            ps.0[MAX_PROBLEMS].to_string(),
            "f.yaml: 250 more problem(s) not shown; fix the ones above and validate again"
        );
    }

    #[test]
    fn problems_join_lines_and_result() {
        let mut ps = Problems::new();
        assert_eq!(ps.clone().into_result(1), Ok(1));
        ps.push(Problem::new("a", "x", "one"));
        ps.push(Problem::new("a", "y", "two"));
        assert_eq!(ps.to_string(), "a: x: one\na: y: two");
        assert!(ps.into_result(()).is_err());
    }
}
