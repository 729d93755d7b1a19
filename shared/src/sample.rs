//! K-minimum-values samples: how distinct destination ports and hosts are counted across
//! deliveries.
//!
//! Each delivery stores, per (source, window), the values whose [`sample_hash`] is among the
//! [`DISTINCT_SAMPLE`] smallest (all of them when there are fewer). Stored sets are unions,
//! which are idempotent, and the union of per-delivery samples still holds the smallest
//! hashes of the union of the values, so [`estimate_distinct`] is exact below the sample
//! size and an estimate with about 13% standard error above it. Pure functions only.

/// Values kept per (source, window) and delivery.
pub const DISTINCT_SAMPLE: usize = 64;

/// The hash that orders sample values: the splitmix64 finaliser. Stored samples depend on
/// it, so it must never change.
pub fn sample_hash(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The (at most `k`) distinct values with the smallest sample hashes, in hash order.
pub fn smallest_by_hash(values: impl IntoIterator<Item = u64>, k: usize) -> Vec<u64> {
    let mut hashed: Vec<(u64, u64)> = values
        .into_iter()
        .map(|value| (sample_hash(value), value))
        .collect();
    hashed.sort_unstable();
    hashed.dedup();
    hashed.truncate(k);
    hashed.into_iter().map(|(_, value)| value).collect()
}

/// A running K-minimum-values sample for streams too large to keep whole.
#[derive(Clone, Debug, Default)]
pub struct KmvSample {
    /// (hash, value), sorted by hash, at most `DISTINCT_SAMPLE` long.
    smallest: Vec<(u64, u64)>,
}

impl KmvSample {
    /// Offers a value; kept if its hash is among the smallest seen.
    pub fn insert(&mut self, value: u64) {
        let entry = (sample_hash(value), value);
        if self.smallest.len() == DISTINCT_SAMPLE
            && self
                .smallest
                .last()
                .is_some_and(|largest| entry >= *largest)
        {
            return;
        }
        if let Err(position) = self.smallest.binary_search(&entry) {
            self.smallest.insert(position, entry);
            self.smallest.truncate(DISTINCT_SAMPLE);
        }
    }

    /// The sampled values.
    pub fn values(&self) -> Vec<u64> {
        self.smallest.iter().map(|&(_, value)| value).collect()
    }
}

/// Distinct values behind a stored sample (the union of per-delivery samples): exact when
/// the sample holds fewer than `DISTINCT_SAMPLE` values, else the K-minimum-values
/// estimate. Returns the count and whether it is exact.
pub fn estimate_distinct(sample: &[u64]) -> (u64, bool) {
    let mut hashes: Vec<u64> = sample.iter().map(|&value| sample_hash(value)).collect();
    hashes.sort_unstable();
    hashes.dedup();
    if hashes.len() < DISTINCT_SAMPLE {
        return (hashes.len() as u64, true);
    }
    // The k-th smallest of n uniform hashes sits near k/n of the range.
    let kth = hashes[DISTINCT_SAMPLE - 1] as f64 / u64::MAX as f64;
    let estimate = (DISTINCT_SAMPLE as f64 - 1.0) / kth.max(f64::MIN_POSITIVE);
    (estimate.round().max(hashes.len() as f64) as u64, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sets_are_kept_whole_and_counted_exactly() {
        let sample = smallest_by_hash([22, 3389, 22, 443], DISTINCT_SAMPLE);
        assert_eq!(sample.len(), 3);
        assert_eq!(estimate_distinct(&sample), (3, true));
    }

    #[test]
    fn running_sample_equals_the_batch_sample() {
        let mut running = KmvSample::default();
        for value in 0..10_000u64 {
            running.insert(value * 7 % 10_007);
        }
        let batch = smallest_by_hash((0..10_000u64).map(|v| v * 7 % 10_007), DISTINCT_SAMPLE);
        assert_eq!(running.values(), batch);
    }

    #[test]
    fn union_of_delivery_samples_estimates_the_union() {
        // Three deliveries of overlapping port ranges: 0..30000, 20000..50000, 45000..65536.
        let mut stored: Vec<u64> = Vec::new();
        for range in [0..30_000u64, 20_000..50_000, 45_000..65_536] {
            stored.extend(smallest_by_hash(range, DISTINCT_SAMPLE));
        }
        let (estimate, exact) = estimate_distinct(&stored);
        assert!(!exact);
        let error = (estimate as f64 - 65_536.0).abs() / 65_536.0;
        assert!(error < 0.4, "estimate {estimate}");
    }

    #[test]
    fn estimates_are_close_on_average() {
        let mut total_error = 0.0;
        for trial in 0..50u64 {
            let values = (0..5_000u64).map(|v| v * 1_000_003 + trial * 77_777_777);
            let (estimate, _) = estimate_distinct(&smallest_by_hash(values, DISTINCT_SAMPLE));
            total_error += (estimate as f64 - 5_000.0).abs() / 5_000.0;
        }
        assert!(
            total_error / 50.0 < 0.15,
            "mean error {}",
            total_error / 50.0
        );
    }

    #[test]
    fn the_sample_hash_is_fixed() {
        // Stored samples depend on these values never changing.
        assert_eq!(sample_hash(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(sample_hash(22), sample_hash(22));
    }
}
