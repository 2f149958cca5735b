//! Request-path canonicalisation, before routing.
//!
//! Per-route rules (which token, which scopes) are only as safe as the agreement between the
//! path the proxy *matched* and the path the upstream *serves*. Path-confusion attacks live in
//! every disagreement: `/public/..%2fadmin`, `/%61dmin`, `/admin;x`, `/ADMIN`, `/admin%EF%BC%8F`
//! (fullwidth solidus), ... each can be routed to a lenient `/` route by a naive proxy while
//! the upstream resolves it to the protected `/admin`.
//!
//! So a path is checked once by [`normalize_path`], which refuses (never repairs) anything
//! whose meaning could differ between parsers, and the single canonical string it returns is
//! used both for matching (`routes::table`) and for forwarding. Matching ignores ASCII case so
//! that a case-insensitive upstream cannot be reached around a more specific route.

use std::borrow::Cow;

/// Longest raw request path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// Why a request path is refused (the proxy answers 400 with this text as error_description).
///
/// Messages stay within the RFC 6749 error_description charset (no `"` or `\`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with '/'.
    #[error("path must start with a slash")]
    NotAbsolute,
    /// The raw path is longer than [`MAX_PATH_LEN`].
    #[error("path is too long")]
    TooLong,
    /// A segment made only of dots (`.`, `..`, `...`).
    #[error("dot segment in path")]
    DotSegment,
    /// Two consecutive slashes.
    #[error("empty path segment")]
    EmptySegment,
    /// `%2F` or `%5C`: a separator the upstream may decode after we matched.
    #[error("percent-encoded slash or backslash in path")]
    EncodedSeparator,
    /// `%2E`: hides dot segments from the matcher.
    #[error("percent-encoded dot in path")]
    EncodedDot,
    /// `%25`: enables double decoding.
    #[error("percent-encoded percent sign in path")]
    EncodedPercent,
    /// A raw or encoded control character (0x00-0x1F, 0x7F, U+0080-U+009F).
    #[error("control character in path")]
    ControlChar,
    /// A raw backslash, which some servers treat as '/'.
    #[error("backslash in path")]
    Backslash,
    /// A raw or encoded ';', which Tomcat-style servers strip as a path parameter.
    #[error("semicolon in path")]
    Semicolon,
    /// A raw space, '?' or '#', which cannot be forwarded as part of a path.
    #[error("character not allowed in path")]
    InvalidChar,
    /// A raw byte outside ASCII (it must be percent-encoded).
    #[error("raw non-ASCII character in path")]
    NonAscii,
    /// A '%' not followed by two hex digits.
    #[error("malformed percent-encoding in path")]
    BadPercentEncoding,
    /// Percent-encoded bytes that are not valid UTF-8 (this includes overlong forms).
    #[error("percent-encoded bytes are not valid UTF-8")]
    InvalidUtf8,
    /// A character that folds to, or looks like, ASCII or a delimiter, or is invisible.
    #[error("confusable or invisible Unicode character in path")]
    ConfusableUnicode,
}

/// Checks a raw request path (no query string; what `http::Uri::path()` gives) and returns the
/// canonical form used for both matching and forwarding: percent-encoded unreserved characters
/// decoded, other escapes with uppercase hex. Borrowed when nothing changed.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    // Segment structure can be checked on the raw text because escapes of '/' and '.' are
    // refused below, so decoding never creates a separator or a dot.
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        if seg.is_empty() && segments.peek().is_some() {
            return Err(PathError::EmptySegment);
        }
        // "..." is not a dot segment per RFC 3986, but some servers treat it like one.
        if !seg.is_empty() && seg.bytes().all(|b| b == b'.') {
            return Err(PathError::DotSegment);
        }
    }
    let bytes = raw.as_bytes();
    // Allocated only once the output first differs from the input (ordinary paths never do).
    let mut out: Option<String> = None;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let len = match b {
            b'%' => {
                let v = escape_at(bytes, i)?;
                if is_unreserved(v) {
                    // An upstream that decodes would see the plain character: match on it too.
                    owned(&mut out, raw, i).push(char::from(v));
                    i += 3;
                    continue;
                }
                3 * if v < 0x80 { check_encoded_ascii(v)? } else { check_encoded_utf8(bytes, i, v)? }
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Semicolon),
            0..=0x1f | 0x7f => return Err(PathError::ControlChar),
            b' ' | b'?' | b'#' => return Err(PathError::InvalidChar),
            0x80.. => return Err(PathError::NonAscii),
            _ => {
                if let Some(o) = out.as_mut() {
                    o.push(char::from(b));
                }
                i += 1;
                continue;
            }
        };
        // Kept escapes get uppercase hex so that equivalent paths are equal strings.
        let esc = raw.get(i..i + len).ok_or(PathError::BadPercentEncoding)?;
        if out.is_some() || esc.bytes().any(|c| c.is_ascii_lowercase()) {
            owned(&mut out, raw, i).extend(esc.chars().map(|c| c.to_ascii_uppercase()));
        }
        i += len;
    }
    Ok(out.map_or(Cow::Borrowed(raw), Cow::Owned))
}

/// The output buffer, created from the unchanged input before `i` on first use.
fn owned<'o>(out: &'o mut Option<String>, raw: &str, i: usize) -> &'o mut String {
    out.get_or_insert_with(|| {
        let mut s = String::with_capacity(raw.len());
        // `i` is a char boundary: every byte before it was checked to be ASCII.
        s.push_str(&raw[..i]);
        s
    })
}

/// The byte encoded by the `%XX` escape at `i`.
fn escape_at(bytes: &[u8], i: usize) -> Result<u8, PathError> {
    let hex = |c: u8| char::from(c).to_digit(16).ok_or(PathError::BadPercentEncoding);
    match bytes.get(i..i + 3) {
        Some(&[b'%', h, l]) => Ok((hex(h)? << 4 | hex(l)?) as u8),
        _ => Err(PathError::BadPercentEncoding),
    }
}

/// RFC 3986 unreserved characters except '.', whose escape is refused instead.
fn is_unreserved(v: u8) -> bool {
    v.is_ascii_alphanumeric() || matches!(v, b'-' | b'_' | b'~')
}

/// Refuses encoded ASCII that would change the path's structure once decoded; returns the
/// number of escapes consumed (1).
fn check_encoded_ascii(v: u8) -> Result<usize, PathError> {
    match v {
        b'/' | b'\\' => Err(PathError::EncodedSeparator),
        b'.' => Err(PathError::EncodedDot),
        b'%' => Err(PathError::EncodedPercent),
        b';' => Err(PathError::Semicolon),
        0..=0x1f | 0x7f => Err(PathError::ControlChar),
        _ => Ok(1),
    }
}

/// Checks that the escape at `i` (decoding to `lead`) starts one complete, valid, harmless
/// UTF-8 character; returns the number of escapes it spans.
fn check_encoded_utf8(bytes: &[u8], i: usize, lead: u8) -> Result<usize, PathError> {
    let n = match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return Err(PathError::InvalidUtf8),
    };
    let mut buf = [lead, 0, 0, 0];
    for (k, slot) in buf.iter_mut().enumerate().take(n).skip(1) {
        let at = i + 3 * k;
        if bytes.get(at) != Some(&b'%') {
            return Err(PathError::InvalidUtf8);
        }
        *slot = escape_at(bytes, at)?;
    }
    // `from_utf8` rejects overlong forms (%C0%AE), surrogates and values above U+10FFFF.
    let s = std::str::from_utf8(&buf[..n]).map_err(|_| PathError::InvalidUtf8)?;
    for c in s.chars() {
        if c.is_control() {
            return Err(PathError::ControlChar);
        }
        if is_confusable(c) {
            return Err(PathError::ConfusableUnicode);
        }
    }
    Ok(n)
}

/// Characters an upstream might turn into ASCII (NFKC or Unicode case folding), that look like
/// '/', '\', '.', or that are invisible. A denylist of whole blocks, not a full NFKC table:
/// rare legitimate uses are refused rather than risk a bypass.
fn is_confusable(c: char) -> bool {
    matches!(u32::from(c),
        0xa0 | 0xa8 | 0xaa | 0xad | 0xaf | 0xb2..=0xb4 | 0xb8..=0xba | 0xbc..=0xbe
        | 0x130..=0x133 | 0x13f | 0x140 | 0x149 | 0x17f | 0x1c4..=0x1cc | 0x1f1..=0x1f3
        | 0x2b0..=0x2ff // spacing modifier letters (ʰ -> h)
        | 0x337 | 0x338 | 0x37e // solidus overlays; Greek question mark is canonically ';'
        | 0x1d2c..=0x1d6a // modifier letters
        | 0x2000..=0x200f | 0x2024..=0x2026 | 0x2028..=0x202f | 0x203c | 0x2044
        | 0x2047..=0x2049 | 0x205f..=0x209f // spaces, invisibles, dot leaders, super/subscripts
        | 0x2100..=0x218f // letterlike (KELVIN SIGN, a/c) and number forms (Roman numerals)
        | 0x2215 | 0x2216 | 0x2460..=0x24ff | 0x2571 | 0x2572 | 0x27cb | 0x27cd
        | 0x29f5 | 0x29f8 | 0x29f9 | 0x3000 | 0x3002 | 0x3200..=0x33ff
        | 0xfb00..=0xfb06 | 0xfe10..=0xfe19 | 0xfe30..=0xfe6f | 0xfeff
        | 0xff01..=0xff65 // fullwidth ASCII and halfwidth CJK punctuation
        | 0xfff9..=0xfffb | 0x1d400..=0x1d7ff | 0x1f100..=0x1f1ad | 0xe0000..=0xe007f
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::percent_decode_str;

    /// Whitespace-separated test data keeps long case lists compact.
    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    /// Percent-encodes every UTF-8 byte of `c` (lowercase hex).
    fn pct(c: char) -> String {
        c.to_string().bytes().map(|b| format!("%{b:02x}")).collect()
    }

    /// One line per variant: its name, then paths that must be refused with it.
    const REFUSED: &str = "
        NotAbsolute api %2f * \\
        DotSegment /. /.. /./a /a/../b /a/. /a/.. /a/./ /... /a/..../b
        EncodedDot /%2e /%2E%2E/admin /.%2e/ /a%2eb /public/%2e%2e
        EmptySegment // //admin /a//b /a// /api///
        EncodedSeparator /api%2fadmin /a%2F /a%5cb /a%5C /public/x%2f..%2fadmin
        EncodedPercent /%25 /%252e%252e/admin /a%25%32%66
        Backslash /a\\b /admin\\ /public\\..\\admin
        ControlChar /a\0b /%00 /a%0d%0aX /%7f /a\x7f /%C2%85 /%c2%9f /\x01
        Semicolon /admin;x /admin;jsessionid=1/ /admin%3bx /admin%3B /;
        BadPercentEncoding /%zz /%4 /% /a%g0 /%%41 /a% /%c3%a
        InvalidChar /a?b /a#b
        NonAscii /é /\u{ff0f} /a\u{200b}
        InvalidUtf8 /%c0%ae /%c0%af /%e0%80%ae /%c1%9c /%c3 /%c3a /%a9 /%ed%a0%80 /%f5%80%80%80
        InvalidUtf8 /%c3%28 /%ff /%e2%82";

    #[test]
    fn refuses_forbidden_forms_with_header_safe_messages() {
        let check = |name: &str, p: &str| {
            let e = normalize_path(p).expect_err(p);
            assert_eq!(format!("{e:?}"), name, "{p:?}");
            // RFC 6749 error_description charset.
            let ok = |b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e);
            assert!(e.to_string().bytes().all(ok), "{e}");
        };
        for line in REFUSED.lines() {
            if let Some((name, paths)) = words(line).split_first() {
                paths.iter().for_each(|p| check(name, p));
            }
        }
        check("NotAbsolute", "");
        check("ControlChar", "/\t");
        check("InvalidChar", "/a b");
        check("TooLong", &format!("/{}", "a".repeat(MAX_PATH_LEN)));
        // Characters that fold to or look like delimiters or ASCII, and invisible ones.
        let confusable = "\u{ff0f}\u{ff3c}\u{ff0e}\u{2215}\u{2044}\u{2024}\u{fe52}\u{fe68}\u{3002}\
            \u{ff61}\u{2025}\u{2026}\u{212a}\u{ff41}\u{1d41a}\u{200b}\u{202e}\u{feff}\u{37e}\u{fb01}\
            \u{17f}\u{131}\u{2100}\u{2488}\u{ad}\u{a0}\u{2160}\u{e0041}\u{29f8}\u{2070}";
        for c in confusable.chars() {
            check("ConfusableUnicode", &format!("/ad{}min", pct(c)));
        }
    }

    #[test]
    fn ordinary_paths_are_borrowed_unchanged() {
        let mut ok = words(
            "/ /api /api/ /api/v1/users /.well-known/jwks.json /a-b_c~d/x.y /x:y@z!$&'()*+,= \
             /caf%C3%A9 /%20%3F%23 /wiki/U.S.",
        );
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        ok.push(&long);
        for p in ok {
            let n = normalize_path(p).unwrap();
            assert!(matches!(n, Cow::Borrowed(_)) && n == p, "{p:?}");
        }
        for c in "éßж日€😀".chars() {
            assert!(normalize_path(&format!("/{}", pct(c))).is_ok(), "{c:?}");
        }
    }

    #[test]
    fn decodes_unreserved_and_uppercases_hex() {
        let pairs = "/%61dmin /admin  /%41%44%4D%49%4E /ADMIN  /%7e%2D%5f%30 /~-_0  \
            /caf%c3%a9 /caf%C3%A9  /a%3fb /a%3Fb  /%e2%82%ac/x /%E2%82%AC/x  \
            /%61%3f/%c3%a9 /a%3F/%C3%A9  /x/%F0%9F%98%80%61 /x/%F0%9F%98%80a";
        for pair in words(pairs).chunks(2) {
            let n = normalize_path(pair[0]).unwrap();
            assert!(matches!(n, Cow::Owned(_)) && n == pair[1], "{pair:?}");
        }
    }

    /// Random concatenations of hostile fragments (a dependency-free stand-in for proptest).
    #[test]
    fn normalized_output_is_safe_and_idempotent() {
        let frags = words(
            "/ / / a A . .. %2e %2F %61 %c3%a9 %C3 %a9 ; \\ % %zz ~ %7E %00 é %ef%bc%8f %3b - %20 ? \
             %41 %25 x.y",
        );
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as usize
        };
        let mut accepted = 0;
        for _ in 0..50_000 {
            let mut p = String::from("/");
            for _ in 0..next() % 10 {
                p.push_str(frags[next() % frags.len()]);
            }
            let Ok(n) = normalize_path(&p) else { continue };
            accepted += 1;
            let again = normalize_path(&n).unwrap();
            assert!(matches!(again, Cow::Borrowed(_)) && again == n, "{p:?}");
            let d = percent_decode_str(&n).decode_utf8().unwrap();
            let bad = ["/./", "/../", "//", "\\", ";", "%", "\0", "\u{ff0f}"];
            assert!(!bad.iter().any(|b| d.contains(b)), "{p:?}");
            assert!(!d.ends_with("/.") && !d.ends_with("/.."), "{p:?}");
        }
        assert!(accepted > 1000, "generator too hostile: {accepted}");
    }
}
