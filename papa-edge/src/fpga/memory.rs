//! `$readmemh` files: a `//` comment line, then one value per line in two's complement hex
//! of the memory's width (what Verilog's `$readmemh` reads into `reg [bits-1:0] m [..]`).

use std::fmt::Write;
use std::string::String;
use std::vec::Vec;

/// `values` as a memory file of `bits`-wide words (4, 8, 16 or 32), after a comment line.
/// Each value is written modulo `2^bits` (two's complement for negative ones).
pub fn write(comment: &str, bits: u32, values: impl IntoIterator<Item = i64>) -> String {
    let digits = bits.div_ceil(4) as usize;
    let mask = 1u64.checked_shl(bits).map_or(u64::MAX, |m| m - 1);
    let mut text = String::new();
    // A comment never spans lines (a newline in it would start a data line).
    let _ = writeln!(text, "// {}", comment.replace('\n', " "));
    for v in values {
        let _ = writeln!(text, "{:0digits$x}", (v as u64) & mask);
    }
    text
}

/// A memory file read back as `bits`-wide signed values (`signed`) or unsigned ones:
/// `None` on a word that is not hex or wider than `bits`. Comment lines are skipped.
pub fn read(text: &str, bits: u32, signed: bool) -> Option<Vec<i64>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(|l| {
            let v = u64::from_str_radix(l, 16).ok()?;
            if v.checked_shr(bits).unwrap_or(0) != 0 {
                return None;
            }
            let negative = signed && bits > 0 && v >> (bits - 1) & 1 == 1;
            Some(if negative {
                (v as i64).wrapping_sub(1i64.wrapping_shl(bits))
            } else {
                v as i64
            })
        })
        .collect()
}
