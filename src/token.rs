//! Bearer tokens. The config holds only the SHA-256 of each token: a token
//! is 256 random bits, so a fast hash is enough (nothing to brute-force),
//! and a leaked config does not leak a usable token. Comparison is in
//! constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 of a token, as written in the config (`sha256 = "<64 hex>"`).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

impl TokenHash {
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    pub fn parse(hex: &str) -> Result<TokenHash, String> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(format!(
                "expected 64 hexadecimal digits (the hash printed by `scim2ldap token`), got {} characters",
                hex.len()
            ));
        }
        let mut out = [0u8; 32];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).map_err(|_| "not hexadecimal".to_string())?;
            out[i] = u8::from_str_radix(s, 16).map_err(|_| format!("{s:?} is not hexadecimal"))?;
        }
        Ok(TokenHash(out))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Constant-time comparison of a presented token with this hash.
    pub fn matches(&self, token: &str) -> bool {
        TokenHash::of(token).0.ct_eq(&self.0).into()
    }
}

/// A new random token: 32 bytes from the OS, hex-encoded (64 characters,
/// safe to paste into Entra's "Secret Token" and Okta's header field).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Finds which configured token, if any, `presented` is; returns its name.
/// Every configured hash is compared, so the time taken does not depend on
/// which one matched.
pub fn authenticate<'a>(
    tokens: impl IntoIterator<Item = (&'a str, &'a TokenHash)>,
    presented: &str,
) -> Option<&'a str> {
    let presented = TokenHash::of(presented);
    let mut found = None;
    for (name, hash) in tokens {
        if bool::from(presented.0.ct_eq(&hash.0)) {
            found = Some(name);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_matches_its_hash_only() {
        let t = generate().unwrap();
        assert_eq!(t.len(), 64);
        let h = TokenHash::of(&t);
        assert!(h.matches(&t));
        assert!(!h.matches("something else"));
        assert_eq!(TokenHash::parse(&h.to_hex()).unwrap(), h);
        assert_ne!(generate().unwrap(), t);
    }

    #[test]
    fn parse_rejects_bad_hex() {
        assert!(TokenHash::parse("abc").is_err());
        assert!(TokenHash::parse(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn authenticate_names_the_matching_token() {
        let a = TokenHash::of("alpha");
        let b = TokenHash::of("beta");
        let list = [("entra", &a), ("okta", &b)];
        assert_eq!(authenticate(list, "beta"), Some("okta"));
        assert_eq!(authenticate(list, "gamma"), None);
    }
}
