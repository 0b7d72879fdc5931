//! Parsing one flag's value: whole numbers, byte sizes with binary
//! suffixes, seconds, booleans; and the one-line error.

use std::time::Duration;

use super::ConfigError;

pub(super) const WHOLE: &str = "is not a whole number";

pub(super) const BOOL: &str = "must be true or false";

pub(super) const SECS: &str = "is not a number of seconds";

pub(super) const POS: &str = "must be a positive number of seconds";

pub(super) fn invalid(m: String) -> ConfigError {
    ConfigError::Invalid(m)
}

pub(super) fn boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

pub(super) fn count(v: &str) -> Option<usize> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// A byte size: a whole number with an optional suffix, `K`/`KiB`,
/// `M`/`MiB`, `G`/`GiB` (also `KB`, `MB`, `GB`; all powers of 1024; any
/// case), within `min..=max`. The one parser of every byte-sized flag.
pub fn size(v: &str, min: usize, max: usize) -> Result<usize, String> {
    let range = format!(
        "must be a size from {} to {} bytes (a whole number, or with K, M or G: 512KiB, 64M)",
        min, max
    );
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(range),
    };
    let n = count(digits)
        .and_then(|n| n.checked_mul(1usize << shift))
        .filter(|n| (min..=max).contains(n));
    n.ok_or(range)
}

pub(super) fn secs(v: &str) -> Option<Duration> {
    let x: f64 = v.parse().ok()?;
    if !x.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&x) {
        return None;
    }
    Some(Duration::from_secs_f64(x))
}

pub(super) fn positive_secs(v: &str) -> Option<Duration> {
    secs(v).filter(|d| *d >= Duration::from_millis(1))
}
