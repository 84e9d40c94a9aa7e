//! Bytes read from Git (or a chart archive) into text the parsers accept.
//!
//! Every parser in this crate takes `&str`. Files in a repository are untrusted bytes: this is
//! the one place that turns them into text, so invalid UTF-8 or a UTF-16 file becomes a
//! [`Problem`] naming the file and the position, never a panic or a lossy guess. A UTF-8 byte
//! order mark is removed (editors on Windows write one; YAML allows it).

use crate::problem::{Problem, Problems};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The text of `bytes`, read as UTF-8 without a leading byte order mark.
pub fn decode(file: &str, bytes: &[u8]) -> Result<String, Problems> {
    let encoding =
        if bytes.starts_with(b"\xFF\xFE\x00\x00") || bytes.starts_with(b"\x00\x00\xFE\xFF") {
            "UTF-32"
        } else if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
            "UTF-16"
        } else {
            ""
        };
    if !encoding.is_empty() {
        return Err(Problem::new(
            file,
            "",
            format!("the file is encoded as {encoding}; save it as UTF-8"),
        )
        .at(1, 1)
        .into());
    }
    let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    match std::str::from_utf8(body) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => {
            let valid = &body[..e.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            // Columns count characters, as the YAML parser's positions do.
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1;
            let offset = e.valid_up_to() + if bytes.starts_with(UTF8_BOM) { 3 } else { 0 };
            Err(Problem::new(
                file,
                "",
                format!("the file is not valid UTF-8 (byte {offset}); save it as UTF-8"),
            )
            .at(
                u32::try_from(line).unwrap_or(u32::MAX),
                u32::try_from(column).unwrap_or(u32::MAX),
            )
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_table() {
        let cases: &[(&[u8], Result<&str, &str>)] = &[
            (b"a: 1\n", Ok("a: 1\n")),
            (b"\xEF\xBB\xBFa: 1\n", Ok("a: 1\n")),
            ("é: ü\n".as_bytes(), Ok("é: ü\n")),
            (b"", Ok("")),
            (
                b"a: 1\nb: \xC3\x28\n",
                Err(
                    "f.yaml: the file is not valid UTF-8 (byte 8); save it as UTF-8 (line 2, column 4)",
                ),
            ),
            (
                b"\xEF\xBB\xBF\xFF",
                Err(
                    "f.yaml: the file is not valid UTF-8 (byte 3); save it as UTF-8 (line 1, column 1)",
                ),
            ),
            (
                "é\u{e9}x: \u{1F600}"
                    .as_bytes()
                    .iter()
                    .copied()
                    .chain([0x80])
                    .collect::<Vec<u8>>()
                    .leak(),
                Err("(line 1, column 7)"),
            ),
            (
                b"\xFF\xFEa\x00",
                Err("f.yaml: the file is encoded as UTF-16; save it as UTF-8 (line 1, column 1)"),
            ),
            (b"\xFE\xFF\x00a", Err("encoded as UTF-16")),
            (b"\xFF\xFE\x00\x00a\x00\x00\x00", Err("encoded as UTF-32")),
        ];
        for (bytes, expected) in cases {
            let got = decode("f.yaml", bytes);
            match (expected, &got) {
                (Ok(text), Ok(t)) => assert_eq!(t, text),
                (Err(needle), Err(ps)) => {
                    assert_eq!(ps.len(), 1);
                    assert_eq!(ps.0[0].file, "f.yaml");
                    assert!(ps.to_string().contains(needle), "{ps}");
                }
                _ => panic!("{bytes:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }
}
