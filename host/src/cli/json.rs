//! A tiny JSON writer (the crate has no serde): a value tree rendered with two-space
//! indentation. Strings are escaped per RFC 8259; non-finite numbers become `null`, since JSON
//! has no NaN or infinity.

use std::fmt::Write as _;

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// Written in Rust's shortest round-trip form; NaN and infinities as `null`.
    Num(f64),
    /// Integers kept exact (an f64 loses them above 2^53).
    Int(i128),
    Str(String),
    Arr(Vec<Json>),
    /// Keys in insertion order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An object from `(key, value)` pairs.
    pub fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Json)>) -> Self {
        Json::Obj(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A string value.
    pub fn str(s: impl Into<String>) -> Self {
        Json::Str(s.into())
    }

    /// An integer value.
    pub fn int(x: impl Into<i128>) -> Self {
        Json::Int(x.into())
    }

    /// `Num(x)` or `Null` for `None`.
    pub fn opt_num(x: Option<f64>) -> Self {
        x.map_or(Json::Null, Json::Num)
    }

    /// The rendered document, ending in a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, indent: usize) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(x) if x.is_finite() => {
                // `{:?}` never uses a form JSON rejects (no "inf", no leading "+", no bare
                // "1." ): e.g. 3.0, 1e-7, 2.5e300.
                let _ = write!(out, "{x:?}");
            }
            Json::Num(_) => out.push_str("null"),
            Json::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Json::Str(s) => out.push_str(&escape(s)),
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Arr(items) => {
                // Arrays of scalars stay on one line (e.g. [m, n, k] triples).
                let flat = items
                    .iter()
                    .all(|v| !matches!(v, Json::Arr(_) | Json::Obj(_)));
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if flat {
                        if i > 0 {
                            out.push(' ');
                        }
                    } else {
                        newline(out, indent + 1);
                    }
                    v.write(out, indent + 1);
                }
                if !flat {
                    newline(out, indent);
                }
                out.push(']');
            }
            Json::Obj(pairs) if pairs.is_empty() => out.push_str("{}"),
            Json::Obj(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(out, indent + 1);
                    out.push_str(&escape(k));
                    out.push_str(": ");
                    v.write(out, indent + 1);
                }
                newline(out, indent);
                out.push('}');
            }
        }
    }
}

fn newline(out: &mut String, indent: usize) {
    out.push('\n');
    for _ in 0..indent {
        out.push_str("  ");
    }
}

/// `s` as a JSON string literal, quotes included: `"` and `\` escaped, control characters
/// (U+0000..U+001F, and U+007F) as short escapes or `\u00XX`; U+2028 / U+2029 escaped too, so
/// the output is also valid JavaScript. Everything else is passed through as UTF-8.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7F}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_specials() {
        assert_eq!(escape("plain"), r#""plain""#);
        assert_eq!(escape(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(escape("l1\nl2\r\t"), r#""l1\nl2\r\t""#);
        assert_eq!(
            escape("\u{0}\u{1}\u{1f}\u{7f}"),
            r#""\u0000\u0001\u001f\u007f""#
        );
        assert_eq!(escape("\u{8}\u{c}"), r#""\b\f""#);
        assert_eq!(escape("H100 µs \u{2028}"), "\"H100 µs \\u2028\"");
        assert_eq!(escape(""), r#""""#);
    }

    #[test]
    fn numbers() {
        assert_eq!(Json::Num(3.0).render(), "3.0\n");
        assert_eq!(Json::Num(1e-7).render(), "1e-7\n");
        assert_eq!(Json::Num(-0.25).render(), "-0.25\n");
        assert_eq!(Json::Num(f64::NAN).render(), "null\n");
        assert_eq!(Json::Num(f64::INFINITY).render(), "null\n");
        assert_eq!(
            Json::Int(u64::MAX.into()).render(),
            "18446744073709551615\n"
        );
        assert_eq!(Json::opt_num(None).render(), "null\n");
    }

    #[test]
    fn nested_layout() {
        let v = Json::obj([
            ("name", Json::str("G2 \"x\"")),
            (
                "mnk",
                Json::Arr(vec![Json::int(1), Json::int(2), Json::int(3)]),
            ),
            (
                "rows",
                Json::Arr(vec![Json::obj([("ok", Json::Bool(true))])]),
            ),
            ("empty", Json::Arr(vec![])),
            ("none", Json::Obj(vec![])),
            ("null", Json::Null),
        ]);
        let want = r#"{
  "name": "G2 \"x\"",
  "mnk": [1, 2, 3],
  "rows": [
    {
      "ok": true
    }
  ],
  "empty": [],
  "none": {},
  "null": null
}
"#;
        assert_eq!(v.render(), want);
    }
}
