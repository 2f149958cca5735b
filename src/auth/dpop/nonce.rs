//! Server nonces for DPoP proofs (RFC 9449 section 8), stateless: a nonce is a time slot and
//! its HMAC, so any instance holding the same key accepts any other's nonce without a lookup.
//! A nonce is good in the slot it was made in and the next one: between one and two
//! `nonce_lifetime_secs`.

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

/// Makes and checks nonces.
pub struct Nonces {
    /// HMAC-SHA256 key; the same on every instance that should accept each other's nonces.
    key: hmac::Key,
    /// Length of a slot, seconds.
    lifetime: u64,
}

impl Nonces {
    /// Nonces keyed with `secret` (at least 32 bytes, checked by the config).
    pub fn new(secret: &[u8], lifetime: u64) -> Nonces {
        Nonces { key: hmac::Key::new(hmac::HMAC_SHA256, secret), lifetime: lifetime.max(1) }
    }

    /// The nonce to hand out at `now`.
    pub fn issue(&self, now: u64) -> String {
        let slot = (now / self.lifetime).to_be_bytes();
        let tag = hmac::sign(&self.key, &slot);
        let mut raw = Vec::with_capacity(8 + 32);
        raw.extend_from_slice(&slot);
        raw.extend_from_slice(tag.as_ref());
        B64.encode(raw)
    }

    /// Whether `nonce` was made by a holder of the key in this slot or the previous one.
    pub fn check(&self, nonce: &str, now: u64) -> bool {
        let Ok(raw) = B64.decode(nonce) else { return false };
        if raw.len() != 40 {
            return false;
        }
        let (slot, tag) = raw.split_at(8);
        let Ok(slot_bytes) = <[u8; 8]>::try_from(slot) else { return false };
        let slot_no = u64::from_be_bytes(slot_bytes);
        let current = now / self.lifetime;
        (slot_no == current || slot_no.saturating_add(1) == current) && hmac::verify(&self.key, slot, tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_live_one_to_two_slots_and_cannot_be_forged() {
        let n = Nonces::new(&[7u8; 32], 300);
        let t = 1_800_000_100;
        let nonce = n.issue(t);
        assert!(n.check(&nonce, t));
        assert!(n.check(&nonce, t + 300), "next slot");
        assert!(!n.check(&nonce, t + 600), "two slots later");
        assert!(!n.check(&nonce, t - 300), "from the future");
        assert!(!Nonces::new(&[8u8; 32], 300).check(&nonce, t), "another key");
        let mut raw = B64.decode(&nonce).unwrap();
        raw[7] ^= 1;
        assert!(!n.check(&B64.encode(&raw), t + 300), "slot changed, tag not");
        assert!(!n.check("", t));
        assert!(!n.check("not base64!", t));
        // Another instance with the same key accepts it.
        assert!(Nonces::new(&[7u8; 32], 300).check(&nonce, t));
    }
}
