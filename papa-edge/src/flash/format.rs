//! The byte layout of a flash image, version 1 (little-endian throughout).
//!
//! ```text
//! offset  size  header (HEADER_LEN bytes)
//!      0     8  magic "PAPAFLSH"
//!      8     2  version (1)
//!     10     1  precision (1 = int8, 2 = f32)
//!     11     1  0
//!     12     2  layers in the table
//!     14     2  classes
//!     16     6  input channels, height, width (u16 each)
//!     22     2  0
//!     24     4  arena length, in activation elements (i8 or f32)
//!     28     4  image length in bytes (header included)
//!     32     4  offset of the input section
//!     36     4  int8: the logits' scale (f32)
//!     40     1  int8: the logits' zero point (i8)
//!     41    19  0
//!     60     4  CRC-32 (ISO-HDLC, zlib's) of bytes 0..60 then 64..image length
//!
//!     64        the layer table: one LAYER_LEN entry per conv/linear layer
//!      0     1  kind (1 = conv, 2 = linear)
//!      1     1  fused ReLU (0 or 1)
//!      2     1  fused max-pool window (0: none), 3: its stride
//!      4     2  input channels (a linear layer's input features), 6: output channels
//!      8     4  input height and width (u16 each; 1 x 1 for a linear layer)
//!     12     3  kernel, stride, zero padding (u8 each; 1, 1, 0 for a linear layer)
//!     15     1  0
//!     16     4  offset of the weights [cout][cin][k][k] (int8, or f32)
//!     20     4  offset of the bias [cout] (int32, or f32)
//!     24     4  int8: offset of the requantisation [cout] (Q31 multiplier i32, shift i32)
//!     28     4  int8: input zero point, output zero point, output clamp min and max (i8)
//!     32     4  int8: the output's scale (f32), for dequantising it
//!     36    12  0
//!
//!               the input section (at its offset)
//!      0     4  pixel scale (f32): the model reads stored / pixel scale
//!      4     4  int8: the input's scale (f32), 8: its zero point (i8), 9: 3 x 0
//!     12  4C+4C mean then std per channel (f32)
//!       256 C   int8: per channel, the int8 input of each stored byte 0..=255
//!
//!               tensors, each at an offset that is a multiple of ALIGN
//! ```
//!
//! The reads here are `const fn`s, so that a firmware can size its arena at compile time
//! from an image it embeds (see [`arena_len_of`](super::arena_len_of)).

/// The first 8 bytes of every image.
pub const MAGIC: [u8; 8] = *b"PAPAFLSH";
/// The version this crate writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 64;
/// Bytes of one layer table entry.
pub const LAYER_LEN: usize = 48;
/// Tensors and the input section start at multiples of this many bytes.
pub const ALIGN: usize = 16;
/// Bytes of the input section before the per-channel values.
pub const INPUT_FIXED_LEN: usize = 12;
/// Values a stored byte can take: the length of one channel's input table.
pub const LUT_LEN: usize = 256;
/// The widest fused max-pool window the runtime takes (it pools conv row segments of this
/// many columns).
pub const MAX_POOL_WINDOW: usize = 32;

pub(crate) mod header {
    pub const VERSION: usize = 8;
    pub const PRECISION: usize = 10;
    pub const LAYERS: usize = 12;
    pub const CLASSES: usize = 14;
    pub const CHANNELS: usize = 16;
    pub const HEIGHT: usize = 18;
    pub const WIDTH: usize = 20;
    pub const ARENA: usize = 24;
    pub const LENGTH: usize = 28;
    pub const INPUT: usize = 32;
    pub const OUTPUT_SCALE: usize = 36;
    pub const OUTPUT_ZERO_POINT: usize = 40;
    pub const CRC: usize = 60;
}

pub(crate) mod layer {
    pub const KIND: usize = 0;
    pub const RELU: usize = 1;
    pub const POOL_KERNEL: usize = 2;
    pub const POOL_STRIDE: usize = 3;
    pub const CIN: usize = 4;
    pub const COUT: usize = 6;
    pub const HEIGHT: usize = 8;
    pub const WIDTH: usize = 10;
    pub const KERNEL: usize = 12;
    pub const STRIDE: usize = 13;
    pub const PADDING: usize = 14;
    pub const WEIGHTS: usize = 16;
    pub const BIAS: usize = 20;
    pub const REQUANT: usize = 24;
    pub const INPUT_ZERO_POINT: usize = 28;
    pub const OUTPUT_ZERO_POINT: usize = 29;
    pub const CLAMP_MIN: usize = 30;
    pub const CLAMP_MAX: usize = 31;
    pub const OUTPUT_SCALE: usize = 32;
}

pub(crate) mod input {
    pub const PIXEL_SCALE: usize = 0;
    pub const SCALE: usize = 4;
    pub const ZERO_POINT: usize = 8;
}

/// `N` bytes at `offset`, or `None` past the end (no indexing: usable in `const fn`).
pub(crate) const fn bytes_at<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    let Some((_, tail)) = bytes.split_at_checked(offset) else {
        return None;
    };
    match tail.first_chunk::<N>() {
        Some(chunk) => Some(*chunk),
        None => None,
    }
}

pub(crate) const fn u8_at(bytes: &[u8], offset: usize) -> Option<u8> {
    match bytes_at::<1>(bytes, offset) {
        Some([b]) => Some(b),
        None => None,
    }
}

pub(crate) const fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    match bytes_at::<2>(bytes, offset) {
        Some(b) => Some(u16::from_le_bytes(b)),
        None => None,
    }
}

pub(crate) const fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    match bytes_at::<4>(bytes, offset) {
        Some(b) => Some(u32::from_le_bytes(b)),
        None => None,
    }
}

pub(crate) fn i32_at(bytes: &[u8], offset: usize) -> Option<i32> {
    bytes_at::<4>(bytes, offset).map(i32::from_le_bytes)
}

pub(crate) fn f32_at(bytes: &[u8], offset: usize) -> Option<f32> {
    bytes_at::<4>(bytes, offset).map(f32::from_le_bytes)
}

pub(crate) fn i8_at(bytes: &[u8], offset: usize) -> Option<i8> {
    u8_at(bytes, offset).map(|b| b as i8)
}

/// The image's CRC-32: over every byte but the stored checksum's four.
pub(crate) fn checksum(image: &[u8]) -> u32 {
    const CRC: crc::Crc<u32, crc::NoTable> =
        crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);
    let mut digest = CRC.digest();
    let (before, after) = image.split_at(header::CRC.min(image.len()));
    digest.update(before);
    digest.update(after.get(4..).unwrap_or(&[]));
    digest.finalize()
}
