//! `consentgate/pseudonyms.py`: HMAC-SHA256 with the same messages, hex, first 128 bits.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
const HEX: &[u8; 16] = b"0123456789abcdef";

pub struct Keyed {
    keyed: HmacSha256,
}

impl Keyed {
    pub fn new(secret: &[u8]) -> Self {
        Keyed { keyed: HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length") }
    }

    fn hash(&self, parts: &[&[u8]]) -> String {
        let mut mac = self.keyed.clone();
        for part in parts {
            mac.update(part);
        }
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(32);
        for byte in &digest[..16] {
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xF)] as char);
        }
        out
    }

    /// `pseudonym(secret, purpose, user_id)`: HMAC of "{purpose}\0{user_id}".
    pub fn pseudonym(&self, purpose: &str, user_id: &str) -> String {
        self.hash(&[purpose.as_bytes(), b"\0", user_id.as_bytes()])
    }

    /// `record_id(secret, purpose, event_id)`: HMAC of "record\0{purpose}\0{event_id}".
    pub fn record_id(&self, purpose: &str, event_id: &str) -> String {
        self.hash(&[b"record\0", purpose.as_bytes(), b"\0", event_id.as_bytes()])
    }

    /// `key_id(secret)`: "k" + the first 11 hex digits of HMAC of "consentgate\0key-id".
    pub fn key_id(&self) -> String {
        format!("k{}", &self.hash(&[b"consentgate\0key-id"])[..11])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc4231_case_2_prefix() {
        // HMAC-SHA256(key="Jefe", "what do ya want for nothing?")
        let k = Keyed::new(b"Jefe");
        assert_eq!(k.hash(&[b"what do ya want ", b"for nothing?"]), "5bdcc146bf60754e6a042426089575c7");
    }
}
