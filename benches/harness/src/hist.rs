//! Log-linear histogram of nanosecond values (relative error below 1/128),
//! mergeable across worker processes through a sparse JSON form.

use serde_json::{json, Value};

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let group = (e - SUB_BITS + 1) as u64;
    let mantissa = v >> (e - SUB_BITS);
    (group * SUB + (mantissa - SUB)) as usize
}

/// Lower bound and width of a bucket.
fn bounds(i: usize) -> (u64, u64) {
    let group = i as u64 / SUB;
    let r = i as u64 % SUB;
    if group == 0 {
        (r, 1)
    } else {
        ((SUB + r) << (group - 1), 1 << (group - 1))
    }
}

impl Hist {
    pub fn new() -> Hist {
        Hist {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            sum: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.sum += v as u128;
        if v > self.max {
            self.max = v;
        }
    }

    /// Value at quantile `q` (0..=1): the middle of its bucket, capped at max.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, w) = bounds(i);
                return (lo + w / 2).min(self.max);
            }
        }
        self.max
    }

    pub fn to_sparse(&self) -> Value {
        let buckets: Vec<Value> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| json!([i, c]))
            .collect();
        json!({"buckets": buckets, "max": self.max, "sum": self.sum.to_string()})
    }

    pub fn merge_sparse(&mut self, v: &Value) {
        if let Some(b) = v.get("buckets").and_then(Value::as_array) {
            for pair in b {
                let i = pair.get(0).and_then(Value::as_u64).unwrap_or(u64::MAX) as usize;
                let c = pair.get(1).and_then(Value::as_u64).unwrap_or(0);
                if i < BUCKETS {
                    self.counts[i] += c;
                    self.total += c;
                }
            }
        }
        if let Some(m) = v.get("max").and_then(Value::as_u64) {
            self.max = self.max.max(m);
        }
        if let Some(s) = v.get("sum").and_then(Value::as_str) {
            self.sum += s.parse::<u128>().unwrap_or(0);
        }
    }

    /// Summary in nanoseconds.
    pub fn summary(&self) -> Value {
        let mean = if self.total > 0 {
            (self.sum / self.total as u128) as u64
        } else {
            0
        };
        json!({
            "count": self.total,
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
            "p999": self.quantile(0.999),
            "max": self.max,
            "mean": mean,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_bounds_agree() {
        for v in [0u64, 1, 127, 128, 255, 256, 1000, 123_456_789, u64::MAX / 3] {
            let (lo, w) = bounds(index(v));
            assert!(lo <= v && v < lo.saturating_add(w), "v={v} lo={lo} w={w}");
        }
    }

    #[test]
    fn quantiles_and_merge() {
        let mut h = Hist::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.01);
        let mut m = Hist::new();
        m.merge_sparse(&h.to_sparse());
        assert_eq!(m.summary()["count"], 1000);
        assert_eq!(m.quantile(0.99), h.quantile(0.99));
    }
}
