//! Strict one-pass decoding of a compact JWS.
//!
//! Header and claims are read by hand-written serde visitors over the decoded bytes: one pass
//! both fills the fields we model (borrowing strings from the buffer when they hold no escape)
//! and refuses any repeated top-level member name, modelled or not, compared after unescaping
//! (`"\u0065xp"` is `exp`). A second "are the keys unique" pass and per-claim `String`s are what
//! made the old parser cost more than an HMAC.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::DecodeSliceError;
use base64::Engine;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::error::TokenError;
use crate::auth::keys::Alg;

/// Decoded headers up to this size stay on the stack (`{"alg","kid","typ"}` is ~50 bytes).
const HEADER_STACK: usize = 256;

pub(super) fn decode_segment(seg: &str) -> Result<Vec<u8>, TokenError> {
    // URL_SAFE_NO_PAD refuses '=', '+', '/', whitespace and non-zero trailing bits.
    B64.decode(seg).map_err(|_| TokenError::Malformed)
}

/// Decodes `seg` into `stack`, or into `heap` when it does not fit; same strictness as
/// [`decode_segment`].
pub(super) fn decode_into<'b>(seg: &str, stack: &'b mut [u8], heap: &'b mut Vec<u8>) -> Result<&'b [u8], TokenError> {
    match B64.decode_slice(seg, stack) {
        Ok(n) => Ok(&stack[..n]),
        Err(DecodeSliceError::OutputSliceTooSmall) => {
            *heap = decode_segment(seg)?;
            Ok(heap)
        }
        Err(DecodeSliceError::DecodeError(_)) => Err(TokenError::Malformed),
    }
}

/// The buffer a [`Parsed`] borrows its claims from, owned by the caller so that the payload can
/// be moved out (into `Verified`) once the borrowed claims are no longer needed.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) payload: Vec<u8>,
}

/// A token split and decoded, not yet trusted.
pub(super) struct Parsed<'t> {
    pub(super) header: Rc<HeaderInfo>,
    pub(super) claims: Claims<'t>,
    /// `header.payload`, the bytes the signature covers.
    pub(super) signing_input: &'t [u8],
    /// Third segment, still base64url.
    pub(super) signature: &'t str,
}

pub(super) fn parse<'t>(token: &'t str, scratch: &'t mut Scratch) -> Result<Parsed<'t>, TokenError> {
    // A fourth segment leaves a '.' in `p`, which base64url decoding refuses: no need to scan the
    // payload for dots twice.
    let (h, rest) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let (p, s) = rest.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let header = header(h)?;
    scratch.payload = decode_segment(p)?;
    let claims = json_object(&scratch.payload, ClaimsVisitor).ok_or(TokenError::BadClaims)?;
    Ok(Parsed { header, claims, signing_input: &token.as_bytes()[..h.len() + 1 + p.len()], signature: s })
}

/// Runs `visitor` over `json`, which must be exactly one JSON object (whitespace around it only).
fn json_object<'a, V: Visitor<'a>>(json: &'a [u8], visitor: V) -> Option<V::Value> {
    // One UTF-8 check of the whole text (ASCII-fast) lets serde_json skip it per string, and also
    // refuses invalid UTF-8 inside members we skip.
    let text = std::str::from_utf8(json).ok()?;
    let mut d = serde_json::Deserializer::from_str(text);
    let value = d.deserialize_map(visitor).ok()?;
    d.end().ok()?;
    Some(value)
}

/// What a header segment says: a pure function of its exact text, so it can be cached by it.
pub(super) struct HeaderInfo {
    /// The base64url segment this was parsed from (the cache key, compared in full).
    segment: Box<str>,
    /// None: an `alg` tokengate does not know, hence never allowed.
    pub(super) alg: Option<Alg>,
    pub(super) typ: Option<Box<str>>,
    pub(super) kid: Option<Box<str>>,
}

/// Headers longer than this are parsed every time rather than cached (bounds the memory held).
const CACHED_HEADER_MAX: usize = 512;
const HEADER_SLOTS: usize = 4;

/// Last headers seen on this thread. All tokens of one key usually share one header segment, so
/// a hit skips its base64 and JSON work; a miss costs one parse as before. Per thread: no locks.
struct HeaderCache {
    slots: [Option<Rc<HeaderInfo>>; HEADER_SLOTS],
    next: usize,
}

thread_local! {
    static HEADERS: RefCell<HeaderCache> =
        const { RefCell::new(HeaderCache { slots: [const { None }; HEADER_SLOTS], next: 0 }) };
}

/// The parsed header of segment `h`, from this thread's cache when the exact same text was seen.
fn header(h: &str) -> Result<Rc<HeaderInfo>, TokenError> {
    let lookup = |c: &RefCell<HeaderCache>| c.borrow().slots.iter().flatten().find(|info| *info.segment == *h).cloned();
    if let Ok(Some(hit)) = HEADERS.try_with(lookup) {
        return Ok(hit);
    }
    let info = Rc::new(parse_header(h)?);
    if h.len() <= CACHED_HEADER_MAX {
        // try_with: during thread teardown there is no cache, and that is fine.
        let _ = HEADERS.try_with(|c| {
            let mut c = c.borrow_mut();
            let at = c.next;
            c.slots[at] = Some(info.clone());
            c.next = (at + 1) % HEADER_SLOTS;
        });
    }
    Ok(info)
}

fn parse_header(h: &str) -> Result<HeaderInfo, TokenError> {
    let mut stack = [0u8; HEADER_STACK];
    let mut heap = Vec::new();
    let json = decode_into(h, &mut stack, &mut heap)?;
    let header = json_object(json, HeaderVisitor).ok_or(TokenError::BadHeader)?;
    if header.crit {
        return Err(TokenError::Crit);
    }
    Ok(HeaderInfo {
        segment: h.into(),
        alg: Alg::parse(&header.alg),
        typ: header.typ.map(Box::from),
        kid: header.kid.map(Box::from),
    })
}

#[derive(Default)]
struct Header<'a> {
    alg: Cow<'a, str>,
    typ: Option<Cow<'a, str>>,
    kid: Option<Cow<'a, str>>,
    /// A `crit` member was present (with any value, even `null` or `[]`).
    crit: bool,
}

pub(super) enum Audience<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

#[derive(Default)]
pub(super) struct Claims<'a> {
    pub(super) iss: Cow<'a, str>,
    pub(super) exp: u64,
    pub(super) nbf: Option<u64>,
    pub(super) iat: Option<u64>,
    pub(super) aud: Option<Audience<'a>>,
    pub(super) sub: Option<Cow<'a, str>>,
    pub(super) client_id: Option<Cow<'a, str>>,
    pub(super) scope: Option<Cow<'a, str>>,
    pub(super) jti: Option<Cow<'a, str>>,
    /// `cnf` (RFC 7800): the key or certificate the token is bound to.
    pub(super) cnf: Option<Confirmation>,
}

/// A token's `cnf` claim: what its presenter must prove it holds. Members other than these two
/// are ignored; a `cnf` with neither is refused by the caller (nothing here can confirm it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Confirmation {
    /// RFC 9449: base64url SHA-256 JWK thumbprint (RFC 7638) of the DPoP key.
    pub jkt: Option<String>,
    /// RFC 8705: base64url SHA-256 of the DER client certificate.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: Option<String>,
}

/// Past this many unmodelled members, duplicates are found with a hash set rather than a scan
/// (a token can hold ~1000 tiny members: keep that linear, not quadratic).
const SCAN_LIMIT: usize = 32;

/// Top-level member names seen so far: a bit per modelled member, the names of the others.
#[derive(Default)]
struct Seen<'de> {
    known: u32,
    others: Vec<Cow<'de, str>>,
    many: Option<HashSet<Cow<'de, str>>>,
}

impl<'de> Seen<'de> {
    fn known<E: de::Error>(&mut self, bit: u32) -> Result<(), E> {
        if self.known & bit != 0 {
            return Err(E::custom("duplicate member"));
        }
        self.known |= bit;
        Ok(())
    }

    fn other<E: de::Error>(&mut self, name: Cow<'de, str>) -> Result<(), E> {
        let fresh = match &mut self.many {
            Some(set) => set.insert(name),
            None if self.others.len() < SCAN_LIMIT => {
                let fresh = !self.others.contains(&name);
                self.others.push(name);
                fresh
            }
            None => {
                let mut set: HashSet<Cow<'de, str>> = self.others.drain(..).collect();
                let fresh = set.insert(name);
                self.many = Some(set);
                fresh
            }
        };
        if fresh {
            Ok(())
        } else {
            Err(E::custom("duplicate member"))
        }
    }
}

/// A JSON string, borrowed from the input unless it had escapes. Anything else is a type error
/// (`null` included: a present member must have its type).
struct Str<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Owned(v.to_owned())))
    }
}

/// `aud`: one string or an array of strings.
impl<'de> Deserialize<'de> for Audience<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Audience<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Audience<'de>, E> {
                Ok(Audience::One(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audience<'de>, E> {
                Ok(Audience::One(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Audience<'de>, A::Error> {
                let mut all = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(Str(a)) = seq.next_element()? {
                    all.push(a);
                }
                Ok(Audience::Many(all))
            }
        }
        d.deserialize_any(V)
    }
}

/// NumericDate: a non-negative JSON integer; floats, strings and null are type errors.
fn date<'de, A: MapAccess<'de>>(map: &mut A) -> Result<u64, A::Error> {
    map.next_value::<u64>()
}

fn string<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Cow<'de, str>, A::Error> {
    map.next_value::<Str<'de>>().map(|s| s.0)
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Header<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JOSE header object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header<'de>, A::Error> {
        let mut h = Header::default();
        let mut alg = None;
        let mut seen = Seen::default();
        while let Some(Str(name)) = map.next_key()? {
            match &*name {
                "alg" => {
                    seen.known(1)?;
                    alg = Some(string(&mut map)?);
                }
                "typ" => {
                    seen.known(2)?;
                    h.typ = Some(string(&mut map)?);
                }
                "kid" => {
                    seen.known(4)?;
                    h.kid = Some(string(&mut map)?);
                }
                "crit" => {
                    seen.known(8)?;
                    map.next_value::<IgnoredAny>()?;
                    h.crit = true;
                }
                _ => {
                    seen.other(name)?;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        h.alg = alg.ok_or_else(|| de::Error::missing_field("alg"))?;
        Ok(h)
    }
}

struct ClaimsVisitor;

impl<'de> Visitor<'de> for ClaimsVisitor {
    type Value = Claims<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JWT claims object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims<'de>, A::Error> {
        let mut c = Claims::default();
        let (mut iss, mut exp) = (None, None);
        let mut seen = Seen::default();
        while let Some(Str(name)) = map.next_key()? {
            match &*name {
                "iss" => {
                    seen.known(1)?;
                    iss = Some(string(&mut map)?);
                }
                "exp" => {
                    seen.known(2)?;
                    exp = Some(date(&mut map)?);
                }
                "nbf" => {
                    seen.known(4)?;
                    c.nbf = Some(date(&mut map)?);
                }
                "iat" => {
                    seen.known(8)?;
                    c.iat = Some(date(&mut map)?);
                }
                "aud" => {
                    seen.known(16)?;
                    // `null` stays "no audience" (as before): it then matches no audience.
                    c.aud = map.next_value::<Option<Audience<'de>>>()?;
                }
                "sub" => {
                    seen.known(32)?;
                    c.sub = Some(string(&mut map)?);
                }
                "client_id" => {
                    seen.known(64)?;
                    c.client_id = Some(string(&mut map)?);
                }
                "scope" => {
                    seen.known(128)?;
                    c.scope = Some(string(&mut map)?);
                }
                "jti" => {
                    seen.known(256)?;
                    c.jti = Some(string(&mut map)?);
                }
                "cnf" => {
                    seen.known(512)?;
                    c.cnf = Some(map.next_value::<Confirmation>()?);
                }
                _ => {
                    seen.other(name)?;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        c.iss = iss.ok_or_else(|| de::Error::missing_field("iss"))?;
        c.exp = exp.ok_or_else(|| de::Error::missing_field("exp"))?;
        Ok(c)
    }
}
