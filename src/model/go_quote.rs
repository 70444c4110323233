//! Go's `%q` (`strconv.Quote`), for error texts that quote what a client sent.
//!
//! The reference's errors quote names, values and tokens with `%q`. Rust's
//! `{:?}` looks the same for plain text but not for the input that makes
//! errors happen: an invalid UTF-8 byte is `\xff` in Go (Rust code would first
//! turn it into U+FFFD), a control byte is `\x01` (Rust: `\u{1}`), and a
//! combining accent is printed as it is (Rust escapes it).

use std::fmt::Write;

/// `bytes` as Go's `strconv.Quote` writes it: in double quotes, `"` and `\`
/// escaped, printable characters as they are, `\a \b \f \n \r \t \v`,
/// other bytes below 0x20 and 0x7f as `\xNN`, each byte of an invalid UTF-8
/// sequence as `\xNN`, other non-printable characters as `\uNNNN` or
/// `\UNNNNNNNN`.
pub fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped(&mut out, c, '"');
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

/// A byte as Go's `%q` writes a `byte` (a rune literal): `'='`, `'\x01'`,
/// `'Ã'` for 0xc3.
pub fn go_quote_byte(b: u8) -> String {
    let mut out = String::from('\'');
    push_escaped(&mut out, char::from(b), '\'');
    out.push('\'');
    out
}

fn push_escaped(out: &mut String, c: char, quote: char) {
    if c == quote || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if is_go_printable(c) {
        out.push(c);
        return;
    }
    let _ = match c {
        '\u{7}' => write!(out, "\\a"),
        '\u{8}' => write!(out, "\\b"),
        '\u{c}' => write!(out, "\\f"),
        '\n' => write!(out, "\\n"),
        '\r' => write!(out, "\\r"),
        '\t' => write!(out, "\\t"),
        '\u{b}' => write!(out, "\\v"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => write!(out, "\\x{:02x}", c as u32),
        c if (c as u32) < 0x10000 => write!(out, "\\u{:04x}", c as u32),
        c => write!(out, "\\U{:08x}", c as u32),
    };
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and
/// the ASCII space. Rust's standard library has no general categories, so
/// this refuses what it can name: controls, separators other than the space,
/// format characters and private use. Unassigned code points are taken as
/// printable (Go escapes them); no client puts them in a metric name.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format = matches!(
        u,
        0xad | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x890..=0x891
            | 0x8e2
            | 0x180e
            | 0x200b..=0x200f
            | 0x202a..=0x202e
            | 0x2060..=0x2064
            | 0x2066..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0x110bd
            | 0x110cd
            | 0x13430..=0x1343f
            | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a
            | 0xe0001
            | 0xe0020..=0xe007f
    );
    let private_use = matches!(u, 0xe000..=0xf8ff | 0xf0000..=0xffffd | 0x100000..=0x10fffd);
    !(format || private_use)
}

#[cfg(test)]
mod tests {
    use super::{go_quote, go_quote_byte};

    /// Each expectation is what Go's `fmt.Sprintf("%q", s)` prints.
    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote(b"plain"), r#""plain""#);
        assert_eq!(go_quote(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote(b"\xff"), r#""\xff""#);
        assert_eq!(go_quote(b"a\xc3"), r#""a\xc3""#);
        assert_eq!(go_quote("ü".as_bytes()), "\"ü\"");
        assert_eq!(
            go_quote("e\u{301}".as_bytes()),
            "\"e\u{301}\"",
            "a combining accent is printable"
        );
        assert_eq!(
            go_quote(b"\x01\x7f\t\n\r\x07\x08\x0b\x0c"),
            r#""\x01\x7f\t\n\r\a\b\v\f""#
        );
        assert_eq!(go_quote("\u{a0}\u{200b}\u{feff}".as_bytes()), r#""\u00a0\u200b\ufeff""#);
        assert_eq!(go_quote("\u{e000}\u{10fffd}".as_bytes()), r#""\ue000\U0010fffd""#);
        assert_eq!(
            go_quote("\u{fffd}".as_bytes()),
            "\"\u{fffd}\"",
            "a real U+FFFD is printable"
        );
    }

    #[test]
    fn quotes_a_byte_like_go_quotes_a_rune() {
        assert_eq!(go_quote_byte(b'='), "'='");
        assert_eq!(go_quote_byte(b'\''), r"'\''");
        assert_eq!(go_quote_byte(b'"'), "'\"'");
        assert_eq!(go_quote_byte(1), r"'\x01'");
        assert_eq!(go_quote_byte(0xc3), "'Ã'");
    }
}
