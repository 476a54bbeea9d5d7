//! Parsing and formatting of human-written sizes such as `1024`, `10 GB` or `1.5 GiB`.
//!
//! Every unit is binary: 1 KB = 1 KiB = 1024 bytes, 1 GB = 1024³ bytes. Hosting panels and
//! the backup and storage products our modules drive use the units this way, so reading
//! `10 GB` as 10 × 10⁹ bytes would under-provision what the operator meant.

/// Parses a size into a number of bytes.
///
/// Accepts a non-negative number with an optional fraction (`1024`, `1.5`) followed by an
/// optional unit, with or without a space: `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`,
/// `G`/`GB`/`GiB`, `T`/`TB`/`TiB` (case-insensitive, all binary, see the module docs).
/// `byte` and `bytes` are accepted as spellings of `B`.
///
/// A fractional result is rounded down (`1.5 B` is 1 byte); a result that does not fit in a
/// `u64` is an error. The error is a short phrase meant to follow the field's name.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(number_end);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err(if s.starts_with('-') {
            "must not be negative".to_string()
        } else {
            format!(
                "{s:?} is not a size; write a number with an optional unit, e.g. 1024 or \"10 GB\""
            )
        });
    }
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!("{number:?} is not a number"));
    }
    let shift = unit_shift(unit).ok_or_else(|| {
        format!("{unit:?} is not a size unit; use B, KB, MB, GB or TB (all powers of 1024)")
    })?;

    let too_large = || format!("{s:?} is too large");
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let whole = whole.checked_mul(1 << shift).ok_or_else(too_large)?;
    whole
        .checked_add(fraction_bits(fraction, shift))
        .ok_or_else(too_large)
}

/// Formats a byte count with the largest binary unit that divides it exactly, so bounds read
/// the way an operator would write them (`9999 GB`, not `10736344498176 bytes`).
pub(crate) fn format_bytes(n: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TB", 40), ("GB", 30), ("MB", 20), ("KB", 10)];
    UNITS
        .iter()
        .find(|(_, shift)| n != 0 && n.trailing_zeros() >= *shift)
        .map(|(unit, shift)| format!("{} {unit}", n >> shift))
        .unwrap_or_else(|| format!("{n} bytes"))
}

/// The power of two a unit multiplies by, `None` for an unknown unit.
fn unit_shift(unit: &str) -> Option<u32> {
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" | "byte" | "bytes" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    Some(shift)
}

/// `floor(0.<digits> × 2^shift)`, computed exactly.
///
/// Doubling the decimal fraction `shift` times and collecting the carries yields the first
/// `shift` binary digits of the fraction, which is the rounded-down result without any
/// floating-point error, however many decimals were written.
fn fraction_bits(digits: &str, shift: u32) -> u64 {
    let mut digits: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
    let mut bits = 0u64;
    for _ in 0..shift {
        let mut carry = 0;
        for d in digits.iter_mut().rev() {
            let doubled = *d * 2 + carry;
            *d = doubled % 10;
            carry = doubled / 10;
        }
        bits = bits << 1 | u64::from(carry);
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    const KB: u64 = 1024;
    const MB: u64 = 1024 * KB;
    const GB: u64 = 1024 * MB;
    const TB: u64 = 1024 * GB;

    #[test]
    fn plain_numbers_are_bytes() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("  77  "), Ok(77));
        assert_eq!(parse_bytes("1000 bytes"), Ok(1000));
        assert_eq!(parse_bytes("1 byte"), Ok(1));
        assert_eq!(parse_bytes("5B"), Ok(5));
    }

    #[test]
    fn every_unit_is_binary_and_case_insensitive() {
        for (text, expected) in [
            ("1 K", KB),
            ("1kb", KB),
            ("1 KiB", KB),
            ("512 kb", 512 * KB),
            ("3M", 3 * MB),
            ("3 mb", 3 * MB),
            ("3 MiB", 3 * MB),
            ("10 GB", 10 * GB),
            ("10GB", 10 * GB),
            ("10 gib", 10 * GB),
            ("10g", 10 * GB),
            ("2 TB", 2 * TB),
            ("2t", 2 * TB),
            ("2 TiB", 2 * TB),
        ] {
            assert_eq!(parse_bytes(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn fractions_are_rounded_down() {
        assert_eq!(parse_bytes("1.5 GB"), Ok(GB + GB / 2));
        assert_eq!(parse_bytes("0.5 KB"), Ok(512));
        assert_eq!(parse_bytes("1.5"), Ok(1));
        assert_eq!(parse_bytes("1.9 B"), Ok(1));
        // 0.001 KB is 1.024 bytes.
        assert_eq!(parse_bytes("0.001 KB"), Ok(1));
        // 1/1024 exactly, then just below it: exact arithmetic tells them apart.
        assert_eq!(parse_bytes("0.0009765625 KB"), Ok(1));
        assert_eq!(parse_bytes("0.0009765624999999999999 KB"), Ok(0));
    }

    #[test]
    fn malformed_sizes_are_rejected() {
        for text in [
            "", "GB", "abc", "10 XB", "10 G B", "1.2.3 GB", "1. GB", ".5 GB", "-5", "-5 GB", "+5",
            "1e3", "10 GBs", "1,024",
        ] {
            assert!(parse_bytes(text).is_err(), "{text:?} should be rejected");
        }
        assert_eq!(parse_bytes("-5 GB"), Err("must not be negative".into()));
        assert!(parse_bytes("10 XB").unwrap_err().contains("\"XB\""));
    }

    #[test]
    fn overflow_is_an_error() {
        assert_eq!(parse_bytes(&u64::MAX.to_string()), Ok(u64::MAX));
        assert!(parse_bytes("18446744073709551616").is_err());
        assert!(parse_bytes("16777216 TB").is_err());
        assert_eq!(parse_bytes("16777215 TB"), Ok(16_777_215 * TB));
        assert!(parse_bytes("99999999999999999999999999 GB").is_err());
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format_bytes(0), "0 bytes");
        assert_eq!(format_bytes(1000), "1000 bytes");
        assert_eq!(format_bytes(1024), "1 KB");
        assert_eq!(format_bytes(1536), "1536 bytes");
        assert_eq!(format_bytes(GB + GB / 2), "1536 MB");
        assert_eq!(format_bytes(9999 * GB), "9999 GB");
        assert_eq!(format_bytes(3 * TB), "3 TB");
    }
}
