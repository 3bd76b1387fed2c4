//! BLAKE2b-256 (RFC 7693, unkeyed, 32-byte digest): the hash Consul and
//! Nomad put in an ACL token's `Hash` field (`ACLToken.SetHash`).

use blake2::Digest as _;

/// The BLAKE2b-256 digest of `parts` written one after the other.
pub(crate) fn blake2b_256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = blake2::Blake2b256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn known_digests() {
        // Python's hashlib.blake2b(data, digest_size=32).
        assert_eq!(
            hex(&blake2b_256(&[])),
            "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
        );
        assert_eq!(
            hex(&blake2b_256(&[b"a", b"bc"])),
            "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
        );
        let long = vec![b'x'; 300];
        assert_eq!(hex(&blake2b_256(&[&long])), LONG);
        // Exactly one block.
        assert_eq!(
            hex(&blake2b_256(&[&long[..128]])),
            "164ffb7089bae6f5a62fb0795e751dc9e88eac92e1a5b2fafe93a25abf2d9c3b"
        );
    }

    const LONG: &str = "5aa7fbbf37986bb2a5d547c0d3c4d4326a24d786e7d57bf93fc784176e38b33d";
}
