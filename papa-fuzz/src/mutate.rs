//! The seeded byte mutator: the structure-blind edits that break loaders (flipped bits,
//! boundary integers in size fields, cut or repeated chunks, stray separators and numbers).

/// SplitMix64: tiny, seedable and good enough to pick edits (not for anything statistical).
#[derive(Clone, Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; 0 when `n` is 0, so callers need not special-case empty ranges.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A length in `1..=max` (`max` >= 1), usually small: most bugs need only a few bytes
    /// moved, but some need a large cut.
    fn chunk_len(&mut self, max: usize) -> usize {
        let cap = 1usize << self.below(12);
        1 + self.below(cap.min(max))
    }
}

/// Single bytes that mean something to a binary or text format: zero, sign bits, all ones,
/// and the separators and digits of CSV, TOML and JSON.
const BYTES: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0xff, b'0', b'1', b'9', b',', b'\n', b'\r', b'\t', b' ', b'-', b'+',
    b'.', b'e', b'"', b'\'', b'=', b'#', b'[', b']', b'{', b'}', b':', b'\\',
];

/// Short strings a byte-at-a-time edit rarely builds: numbers at the edges of f32, f64,
/// u32 and u64, non-numbers, a UTF-8 byte-order mark, empty containers and fields.
const TOKENS: &[&[u8]] = &[
    b"-1",
    b"-0",
    b"0.5",
    b"1e20",
    b"1e39",
    b"1e300",
    b"1e308",
    b"-1e308",
    b"nan",
    b"inf",
    b"-inf",
    b"4294967296",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\"\"",
    b"[]",
    b"{}",
    b",,",
    b"\r\n",
    b"\n\n",
    b"\0",
];

/// Boundary values for 4-byte size and count fields.
const U32S: &[u32] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

/// Boundary values for 8-byte size and count fields (safetensors' header length, offsets).
const U64S: &[u64] = &[
    0,
    1,
    0xffff_ffff,
    1 << 32,
    (1 << 32) + 1,
    1 << 40,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

/// A deterministic mutator: the same seed gives the same edits of the same inputs.
///
/// ```
/// use papa_fuzz::Mutator;
/// let mut a = Mutator::new(7, 64);
/// let mut b = Mutator::new(7, 64);
/// let seed = b"1,2,3\n4,5,6\n";
/// let first = a.mutate(seed, b"");
/// assert_ne!(first, seed);
/// assert_eq!(first, b.mutate(seed, b""));
/// assert!(first.len() <= 64);
/// ```
#[derive(Clone, Debug)]
pub struct Mutator {
    rng: Rng,
    max_len: usize,
}

impl Mutator {
    /// A mutator whose outputs never exceed `max_len` bytes (so repeated duplication cannot
    /// grow inputs until each case is slow).
    pub fn new(seed: u64, max_len: usize) -> Self {
        Mutator {
            rng: Rng(seed),
            max_len: max_len.max(1),
        }
    }

    /// `input` with 1 to 8 stacked edits, never equal to `input`; `splice` is a second
    /// input that the splicing edit may take its tail from.
    pub fn mutate(&mut self, input: &[u8], splice: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        out.truncate(self.max_len);
        let edits = 1usize << self.rng.below(4);
        for _ in 0..edits {
            self.edit(&mut out, splice);
            out.truncate(self.max_len);
        }
        if out == input {
            // Edits can cancel out (or rewrite a byte with itself); a case that repeats its
            // seed tests nothing new.
            match out.len() {
                0 => out.push(*self.rng.pick(BYTES)),
                n => out[self.rng.below(n)] ^= 1 << self.rng.below(8),
            }
        }
        out
    }

    fn edit(&mut self, out: &mut Vec<u8>, splice: &[u8]) {
        let rng = &mut self.rng;
        let len = out.len();
        // Edits that change bytes in place need one; an empty buffer only grows.
        let op = if len == 0 {
            5 + rng.below(2) * 3
        } else {
            rng.below(13)
        };
        match op {
            0 => out[rng.below(len)] ^= 1 << rng.below(8),
            1 => out[rng.below(len)] = *rng.pick(BYTES),
            2 => out[rng.below(len)] = rng.next() as u8,
            3 => {
                let at = rng.below(len);
                let delta = 1 + rng.below(16) as u8;
                out[at] = if rng.below(2) == 0 {
                    out[at].wrapping_add(delta)
                } else {
                    out[at].wrapping_sub(delta)
                };
            }
            4 => out.truncate(rng.below(len)),
            5 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = match rng.below(3) {
                    0 => rng.pick(TOKENS).to_vec(),
                    1 => (0..1 + rng.below(4)).map(|_| *rng.pick(BYTES)).collect(),
                    _ => (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect(),
                };
                out.splice(at..at, bytes);
            }
            6 => {
                let start = rng.below(len);
                let n = rng.chunk_len(len - start);
                out.drain(start..start + n);
            }
            7 => {
                let start = rng.below(len);
                let n = rng.chunk_len(len - start);
                let chunk = out[start..start + n].to_vec();
                let at = rng.below(len + 1);
                for _ in 0..1 + rng.below(4) {
                    out.splice(at..at, chunk.iter().copied());
                }
            }
            8 => {
                let head = rng.below(len + 1);
                let tail = rng.below(splice.len() + 1);
                out.truncate(head);
                out.extend_from_slice(&splice[tail..]);
            }
            9 | 10 if len >= 4 => {
                let at = rng.below(len - 3);
                let value = if op == 9 {
                    *rng.pick(U32S)
                } else {
                    // Sizes near the buffer's own length catch off-by-one bounds checks.
                    (len as u32)
                        .wrapping_add(rng.below(17) as u32)
                        .wrapping_sub(8)
                };
                let bytes = if rng.below(2) == 0 {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                out[at..at + 4].copy_from_slice(&bytes);
            }
            11 if len >= 8 => {
                let at = rng.below(len - 7);
                let value = *rng.pick(U64S);
                let bytes = if rng.below(2) == 0 {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                out[at..at + 8].copy_from_slice(&bytes);
            }
            _ => {
                // Overwrites one chunk with another of the same buffer (a field moved).
                let n = rng.chunk_len(len);
                let from = rng.below(len - n + 1);
                let to = rng.below(len - n + 1);
                out.copy_within(from..from + n, to);
            }
        }
    }
}
