//! The names of tokengate's keys in Redis (see the layout in the module above), all under
//! `state.key_prefix`.

use crate::store::TokenHash;

/// Key names under one prefix.
#[derive(Debug)]
pub(super) struct Keys {
    /// `state.key_prefix`.
    pub(super) prefix: String,
}

impl Keys {
    pub(super) fn token(&self, h: &TokenHash) -> String {
        format!("{}t:{}", self.prefix, hex(h))
    }
    pub(super) fn family(&self, id: &str) -> String {
        format!("{}f:{{{id}}}", self.prefix)
    }
    pub(super) fn family_tokens(&self, id: &str) -> String {
        format!("{}h:{{{id}}}", self.prefix)
    }
    pub(super) fn client(&self, client_id: &str) -> String {
        format!("{}c:{client_id}", self.prefix)
    }
    pub(super) fn assertion(&self, client_id: &str, jti: &str) -> String {
        // The length keeps ("a:b", "c") and ("a", "b:c") apart.
        format!("{}a:{}:{client_id}:{jti}", self.prefix, client_id.len())
    }
    pub(super) fn quota(&self, key: &str) -> String {
        format!("{}q:{key}", self.prefix)
    }
    pub(super) fn proof(&self, id: &[u8; 16]) -> String {
        format!("{}d:{}", self.prefix, hex(id))
    }
    pub(super) fn lockout(&self, key: &str) -> String {
        format!("{}l:{key}", self.prefix)
    }
    pub(super) fn denied(&self) -> String {
        format!("{}{{denylist}}:jtis", self.prefix)
    }
    pub(super) fn denials(&self) -> String {
        format!("{}{{denylist}}:stream", self.prefix)
    }
}

/// Lower-case hex of a token hash (or any other digest).
pub(super) fn hex(h: &[u8]) -> String {
    use std::fmt::Write;
    h.iter().fold(String::with_capacity(2 * h.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
