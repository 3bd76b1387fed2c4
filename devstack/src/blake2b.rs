//! BLAKE2b-256 (RFC 7693, unkeyed, 32-byte digest): the hash Consul and
//! Nomad put in an ACL token's `Hash` field (`ACLToken.SetHash`).

const IV: [u64; 8] = [
    0x6a09_e667_f3bc_c908,
    0xbb67_ae85_84ca_a73b,
    0x3c6e_f372_fe94_f82b,
    0xa54f_f53a_5f1d_36f1,
    0x510e_527f_ade6_82d1,
    0x9b05_688c_2b3e_6c1f,
    0x1f83_d9ab_fb41_bd6b,
    0x5be0_cd19_137e_2179,
];

const SIGMA: [[usize; 16]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
];

const BLOCK: usize = 128;

fn mix(v: &mut [u64; 16], (a, b, c, d): (usize, usize, usize, usize), x: u64, y: u64) {
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(x);
    v[d] = (v[d] ^ v[a]).rotate_right(32);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(24);
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(y);
    v[d] = (v[d] ^ v[a]).rotate_right(16);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(63);
}

fn compress(h: &mut [u64; 8], block: &[u8; BLOCK], counter: u128, last: bool) {
    let mut m = [0u64; 16];
    for (word, bytes) in m.iter_mut().zip(block.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        *word = u64::from_le_bytes(b);
    }
    let mut v = [0u64; 16];
    v[..8].copy_from_slice(h);
    v[8..].copy_from_slice(&IV);
    v[12] ^= counter as u64;
    v[13] ^= (counter >> 64) as u64;
    if last {
        v[14] = !v[14];
    }
    // Twelve rounds; rounds 11 and 12 reuse the first two permutations.
    for round in 0..12 {
        let s = &SIGMA[round % 10];
        mix(&mut v, (0, 4, 8, 12), m[s[0]], m[s[1]]);
        mix(&mut v, (1, 5, 9, 13), m[s[2]], m[s[3]]);
        mix(&mut v, (2, 6, 10, 14), m[s[4]], m[s[5]]);
        mix(&mut v, (3, 7, 11, 15), m[s[6]], m[s[7]]);
        mix(&mut v, (0, 5, 10, 15), m[s[8]], m[s[9]]);
        mix(&mut v, (1, 6, 11, 12), m[s[10]], m[s[11]]);
        mix(&mut v, (2, 7, 8, 13), m[s[12]], m[s[13]]);
        mix(&mut v, (3, 4, 9, 14), m[s[14]], m[s[15]]);
    }
    for (i, word) in h.iter_mut().enumerate() {
        *word ^= v[i] ^ v[i + 8];
    }
}

/// The BLAKE2b-256 digest of `parts` written one after the other.
pub(crate) fn blake2b_256(parts: &[&[u8]]) -> [u8; 32] {
    let data: Vec<u8> = parts.concat();
    let mut h = IV;
    // Parameter block: digest length 32, no key, fanout 1, depth 1.
    h[0] ^= 0x0101_0000 ^ 32;
    let mut counter: u128 = 0;
    let mut chunks = data.chunks(BLOCK).peekable();
    if chunks.peek().is_none() {
        compress(&mut h, &[0u8; BLOCK], 0, true);
    }
    while let Some(chunk) = chunks.next() {
        let mut block = [0u8; BLOCK];
        block[..chunk.len()].copy_from_slice(chunk);
        counter += chunk.len() as u128;
        compress(&mut h, &block, counter, chunks.peek().is_none());
    }
    let mut out = [0u8; 32];
    for (bytes, word) in out.chunks_exact_mut(8).zip(h.iter()) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    out
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
