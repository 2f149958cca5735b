//! Rules on a verified token's claims (`[[routes]] require`), and claim paths into its payload
//! (`require` and `claims_to_headers`). Compiled once per snapshot from the config; checked on the
//! request path against the payload parsed once per token (the verified-token cache keeps it),
//! so a check allocates nothing but the percent-decoding of a placeholder that holds escapes.
//!
//! Providers put what matters in different places: Keycloak in `realm_access.roles` and
//! `resource_access.<client>.roles`, Entra ID in `roles`, `groups` and a space-separated `scp`,
//! Auth0 in namespaced claims (`https://example.com/roles`, which holds dots and slashes: written
//! as an array of path segments).

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

/// A claim path: `"realm_access.roles"` (dotted), or `["https://example.com/roles"]` (segments,
/// for names that hold dots or slashes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    /// The segments, outermost first.
    segments: Box<[Box<str>]>,
    /// A dotted path as one name, tried first: a top-level claim whose name holds dots (as
    /// `claims_to_headers` read names before paths existed) keeps working.
    whole: Option<Box<str>>,
    /// As a person reads it, for the 403's body and errors.
    shown: Arc<str>,
}

impl ClaimPath {
    /// The claim at this path, if the payload has it (JSON `null` counts as absent).
    pub fn lookup<'v>(&self, payload: &'v Value) -> Option<&'v Value> {
        if let Some(v) = self.whole.as_deref().and_then(|w| payload.get(w)) {
            return (!v.is_null()).then_some(v);
        }
        let mut v = payload;
        for s in self.segments.iter() {
            v = v.as_object()?.get(s.as_ref())?;
        }
        (!v.is_null()).then_some(v)
    }

    /// The path as written in dotted form (segments joined by `.`).
    pub fn shown(&self) -> &Arc<str> {
        &self.shown
    }
}

/// `claim = ...` as written: a dotted string or an array of segments.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ClaimPathConfig {
    /// `"realm_access.roles"`.
    Dotted(String),
    /// `["resource_access", "my.client", "roles"]`.
    Segments(Vec<String>),
}

impl ClaimPathConfig {
    /// The compiled path; Err says what is wrong (empty segments).
    pub fn compile(&self) -> Result<ClaimPath, String> {
        let segments: Vec<Box<str>> = match self {
            ClaimPathConfig::Dotted(s) => s.split('.').map(Into::into).collect(),
            ClaimPathConfig::Segments(v) => v.iter().map(|s| s.as_str().into()).collect(),
        };
        if segments.is_empty() || segments.iter().any(|s| s.is_empty()) {
            return Err(format!("claim {self} has an empty segment"));
        }
        let whole = match self {
            ClaimPathConfig::Dotted(s) if segments.len() > 1 => Some(s.as_str().into()),
            _ => None,
        };
        Ok(ClaimPath { shown: self.to_string().into(), segments: segments.into(), whole })
    }
}

impl std::fmt::Display for ClaimPathConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimPathConfig::Dotted(s) => f.write_str(s),
            ClaimPathConfig::Segments(v) => {
                write!(f, "[{}]", v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "))
            }
        }
    }
}

/// A scalar a rule compares with: a string, an integer, a boolean, or a path placeholder's
/// value (`"{tenant}"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ValueConfig {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string; `"{name}"` names a placeholder of the route's prefix.
    Str(String),
}

/// One `require` entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Where in the payload.
    pub claim: ClaimPathConfig,
    /// The claim is this scalar.
    #[serde(default)]
    pub equals: Option<ValueConfig>,
    /// A scalar claim is one of these, or an array (or space-separated string) claim holds one.
    #[serde(default)]
    pub any_of: Option<Vec<ValueConfig>>,
    /// An array (or space-separated string) claim holds every one of these.
    #[serde(default)]
    pub all_of: Option<Vec<ValueConfig>>,
    /// The claim exists (true) or does not (false).
    #[serde(default)]
    pub present: Option<bool>,
}

/// A compiled value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    Bool(bool),
    Int(i64),
    Str(Box<str>),
    /// The index of a placeholder in the route's prefix.
    Placeholder(Box<str>),
}

/// A compiled condition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    Equals(Expected),
    AnyOf(Box<[Expected]>),
    AllOf(Box<[Expected]>),
    Present(bool),
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The claim it looks at.
    claim: ClaimPath,
    /// What must hold of it.
    condition: Condition,
}

impl RuleConfig {
    /// Compiles against the route's placeholder names; Err names what is wrong (the caller adds
    /// the route and key).
    pub fn compile(&self, placeholders: &[String]) -> Result<Rule, String> {
        let claim = self.claim.compile()?;
        let value = |v: &ValueConfig| -> Result<Expected, String> {
            Ok(match v {
                ValueConfig::Bool(b) => Expected::Bool(*b),
                ValueConfig::Int(i) => Expected::Int(*i),
                ValueConfig::Str(s) => match s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                    Some(name) if placeholders.iter().any(|p| p == name) => Expected::Placeholder(name.into()),
                    Some(name) => return Err(format!("{{{name}}} is not a placeholder of the route's prefix")),
                    None => Expected::Str(s.as_str().into()),
                },
            })
        };
        let list = |vs: &[ValueConfig]| -> Result<Box<[Expected]>, String> {
            if vs.is_empty() {
                return Err(format!("claim {}: an empty list holds for no token", self.claim));
            }
            vs.iter().map(value).collect()
        };
        let mut conditions = Vec::new();
        if let Some(v) = &self.equals {
            conditions.push(Condition::Equals(value(v)?));
        }
        if let Some(vs) = &self.any_of {
            conditions.push(Condition::AnyOf(list(vs)?));
        }
        if let Some(vs) = &self.all_of {
            conditions.push(Condition::AllOf(list(vs)?));
        }
        if let Some(p) = self.present {
            conditions.push(Condition::Present(p));
        }
        match conditions.len() {
            1 => Ok(Rule { claim, condition: conditions.remove(0) }),
            0 => Err(format!("claim {}: say one of equals, any_of, all_of or present", self.claim)),
            _ => Err(format!("claim {}: one of equals, any_of, all_of or present per rule", self.claim)),
        }
    }
}

impl Rule {
    /// The claim this rule is about, for the 403 (never the expected values).
    pub fn claim(&self) -> &ClaimPath {
        &self.claim
    }

    /// Whether the rule holds for `payload`; `capture` gives a placeholder's raw path segment.
    pub fn holds<'p>(&self, payload: &Value, capture: &impl Fn(&str) -> Option<&'p str>) -> bool {
        let found = self.claim.lookup(payload);
        let matches = |v: &Value, e: &Expected| scalar_matches(v, e, capture);
        match (&self.condition, found) {
            (Condition::Present(want), found) => found.is_some() == *want,
            (_, None) => false,
            (Condition::Equals(e), Some(v)) => matches(v, e),
            (Condition::AnyOf(es), Some(v)) => {
                es.iter().any(|e| items(v).any(|i| matches(i, e)) || words_hold(v, e, capture))
            }
            (Condition::AllOf(es), Some(v)) => {
                es.iter().all(|e| items(v).any(|i| matches(i, e)) || words_hold(v, e, capture))
            }
        }
    }
}

/// The first rule of `rules` that does not hold, if any.
pub fn first_failing<'r, 'p>(
    rules: &'r [Rule],
    payload: &Value,
    capture: &impl Fn(&str) -> Option<&'p str>,
) -> Option<&'r Rule> {
    rules.iter().find(|r| !r.holds(payload, capture))
}

/// A claim's items: an array's elements, or the claim itself.
fn items(v: &Value) -> std::slice::Iter<'_, Value> {
    match v {
        Value::Array(a) => a.iter(),
        other => std::slice::from_ref(other).iter(),
    }
}

/// A space-separated string claim (`scope`, Entra's `scp`) holds `e` as one of its words.
fn words_hold<'p>(v: &Value, e: &Expected, capture: &impl Fn(&str) -> Option<&'p str>) -> bool {
    let Value::String(s) = v else { return false };
    s.contains(' ')
        && s.split(' ').any(|w| match e {
            Expected::Str(x) => w == x.as_ref(),
            Expected::Placeholder(name) => capture(name).is_some_and(|raw| decoded(raw).as_ref() == w),
            _ => false,
        })
}

fn scalar_matches<'p>(v: &Value, e: &Expected, capture: &impl Fn(&str) -> Option<&'p str>) -> bool {
    match (v, e) {
        (Value::String(s), Expected::Str(x)) => s == x.as_ref(),
        (Value::Bool(b), Expected::Bool(x)) => b == x,
        (Value::Number(n), Expected::Int(x)) => n.as_i64() == Some(*x),
        // Exactly, after percent-decoding: the segment as the upstream will read it. A case
        // difference is refused: in a case-sensitive upstream "ACME" may be another tenant.
        (Value::String(s), Expected::Placeholder(name)) => capture(name).is_some_and(|raw| decoded(raw) == s.as_str()),
        _ => false,
    }
}

/// A path segment as text: percent-escapes decoded (only these allocate); invalid UTF-8 never
/// equals a claim (the path checks refuse it before routing anyway).
fn decoded(raw: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(raw).decode_utf8().unwrap_or(Cow::Borrowed("\u{fffd}"))
}

/// A claim's value as header text: a string, number or boolean as is, an array of those joined
/// by spaces; None for objects, nulls and mixed arrays.
pub fn as_header_text(payload: &Value, path: &ClaimPath) -> Option<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match path.lookup(payload)? {
        Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>().map(|p| p.join(" ")),
        other => scalar(other),
    }
}

#[cfg(test)]
#[path = "claims_tests.rs"]
mod tests;
