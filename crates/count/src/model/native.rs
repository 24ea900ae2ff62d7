//! The exponential buckets of a native histogram, kept beside the classic
//! ones so one histogram can be served both ways.
//!
//! Schema 3 (each power of two split into 8 buckets, bounds 9 % apart) is
//! client_golang's default resolution: a quantile estimated from it is
//! within about 4.5 % of the true value, finer than any of our classic
//! buckets, while a webhook whose durations spread over 50 ms to 5 s fills
//! about 55 buckets.

use serde::{Deserialize, Serialize};

/// The resolution of every native histogram the exporter serves.
pub const NATIVE_SCHEMA: i32 = 3;

/// Observations at or below this go to the zero bucket. client_golang's
/// default: far below any duration or lag we observe, and non-zero, which
/// is what tells Prometheus 2.x that a histogram without observations is a
/// native one.
pub const NATIVE_ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;

/// `2^(k/8) / 2` for k in 0..8: the lower bounds of the 8 buckets in the
/// power of two [0.5, 1) that a frexp fraction falls in.
const FRACTION_BOUNDS: [f64; 8] = [
    0.5,
    0.545_253_866_332_628_9,
    0.594_603_557_501_360_5,
    0.648_419_777_325_504_8,
    std::f64::consts::FRAC_1_SQRT_2,
    0.771_105_412_703_970_4,
    0.840_896_415_253_714_5,
    0.917_004_043_204_671_2,
];

/// Sparse exponential bucket counts: bucket `i` holds observations in
/// `(2^((i-1)/8), 2^(i/8)]`, as Prometheus defines them for schema 3.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NativeBuckets {
    /// Observations at or below [`NATIVE_ZERO_THRESHOLD`].
    pub zero: u64,
    /// `(bucket index, count)`, sorted by index, no zero counts. A sorted
    /// vector, not a map: a histogram holds a few dozen buckets, and
    /// counting an observation must not allocate once its bucket exists.
    pub buckets: Vec<(i32, u64)>,
}

impl NativeBuckets {
    /// Adds one observation of a value that is not negative.
    pub fn observe(&mut self, value: f64) {
        match bucket_index(value) {
            None => self.zero += 1,
            Some(i) => self.add(i, 1),
        }
    }

    /// Adds `n` observations to bucket `index`.
    pub fn add(&mut self, index: i32, n: u64) {
        match self.buckets.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => self.buckets[at].1 += n,
            Err(at) => self.buckets.insert(at, (index, n)),
        }
    }

    /// Observations in every bucket, the zero bucket included.
    pub fn count(&self) -> u64 {
        self.zero + self.buckets.iter().map(|(_, n)| n).sum::<u64>()
    }

    /// The runs of consecutive buckets, as Prometheus's protobuf spans: each
    /// `(offset, length)` with the offset from the end of the previous run
    /// (from 0 for the first), then each bucket's count as the difference
    /// from the bucket before it.
    pub fn spans_and_deltas(&self) -> (Vec<(i32, u32)>, Vec<i64>) {
        let mut spans: Vec<(i32, u32)> = Vec::new();
        let mut deltas = Vec::with_capacity(self.buckets.len());
        let mut next = 0i32;
        let mut previous = 0i64;
        for (i, &(index, n)) in self.buckets.iter().enumerate() {
            match spans.last_mut() {
                Some((_, length)) if i > 0 && index == next => *length += 1,
                _ => spans.push((index - next, 1)),
            }
            next = index + 1;
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            deltas.push(n - previous);
            previous = n;
        }
        (spans, deltas)
    }
}

/// The bucket a positive value falls in, or `None` for the zero bucket.
pub fn bucket_index(value: f64) -> Option<i32> {
    if value.is_nan() || value <= NATIVE_ZERO_THRESHOLD {
        return None;
    }
    let (fraction, exponent) = frexp(value);
    // The first bound at or above the fraction: a power of two is the
    // upper bound of its bucket, as in Prometheus.
    let k = FRACTION_BOUNDS.partition_point(|b| *b < fraction) as i32;
    Some((exponent - 1) * 8 + k)
}

/// The upper bound of bucket `index`.
pub fn bucket_upper_bound(index: i32) -> f64 {
    (f64::from(index) / 8.0).exp2()
}

/// `value = fraction * 2^exponent` with `fraction` in [0.5, 1), for the
/// normal positive values [`bucket_index`] sees (its threshold is far above
/// the subnormals).
fn frexp(value: f64) -> (f64, i32) {
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let fraction = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (fraction, exponent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_bounds_are_the_schema_3_bounds() {
        for (k, b) in FRACTION_BOUNDS.iter().enumerate() {
            let exact = (k as f64 / 8.0).exp2() / 2.0;
            assert!((b - exact).abs() < 1e-15, "bound {k}: {b} vs {exact}");
        }
    }

    #[test]
    fn every_value_falls_in_its_bucket_and_powers_of_two_are_upper_bounds() {
        for i in -200..200 {
            let upper = bucket_upper_bound(i);
            assert_eq!(bucket_index(upper), Some(i), "upper bound of {i}");
            let inside = upper * 0.99;
            let below = bucket_upper_bound(i - 1);
            if inside > below {
                assert_eq!(bucket_index(inside), Some(i), "inside {i}");
            }
        }
        assert_eq!(bucket_index(1.0), Some(0));
        assert_eq!(bucket_index(2.0), Some(8));
        assert_eq!(bucket_index(1.0001), Some(1));
        assert_eq!(bucket_index(0.0), None);
        assert_eq!(bucket_index(f64::NAN), None);
    }

    #[test]
    fn spans_cover_runs_and_deltas_rebuild_the_counts() {
        let mut b = NativeBuckets::default();
        for (i, n) in [(-3, 2), (-2, 5), (4, 1), (5, 1), (6, 7), (20, 3)] {
            b.add(i, n);
        }
        b.observe(0.0);
        let (spans, deltas) = b.spans_and_deltas();
        assert_eq!(spans, vec![(-3, 2), (5, 3), (13, 1)]);
        assert_eq!(deltas, vec![2, 3, -4, 0, 6, -4]);
        assert_eq!(b.count(), 20);
        // Decoding the way Prometheus does gives the buckets back.
        let mut index = 0;
        let mut count = 0;
        let mut decoded = Vec::new();
        let mut d = deltas.iter();
        for (offset, length) in spans {
            index += offset;
            for _ in 0..length {
                count += d.next().expect("a delta per bucket");
                decoded.push((index, count as u64));
                index += 1;
            }
        }
        assert_eq!(decoded, b.buckets);
    }
}
