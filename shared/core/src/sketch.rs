//! Distinct counts that survive being stored: how distinct destination ports and hosts are
//! counted across deliveries without the stored item growing with every delivery.
//!
//! A [`DistinctSketch`] is a HyperLogLog of [`SKETCH_REGISTERS`] registers over
//! [`stable_hash`]. It is stored as a DynamoDB number set of *elements*, one per non-zero
//! register, `register * 64 + rank`. DynamoDB's `ADD` on a set is a union, and the union of
//! two deliveries' elements holds, for every register, the larger rank: exactly the
//! registers of the merged sketch. So each delivery adds at most 1,024 small numbers, the
//! set can never hold more than 1,024 x 55 of them (in practice a few per register: about
//! 6,500, 23 KB, for a source that swept every port across 2,000 deliveries), and the
//! estimate of the union is the estimate of the merged registers. Pure functions only.

/// Registers per sketch: a standard error of about 1.04 / 32 = 3.3% for large counts, and
/// exact or one-under counts for small ones (linear counting: two of 20 values share a
/// register in about 17% of cases). 1,024 is also the most whose elements fit in 16 bits.
pub const SKETCH_REGISTERS: usize = 1024;

const REGISTER_BITS: u32 = SKETCH_REGISTERS.trailing_zeros();
/// The largest rank: the guard bit below the remaining 54 hash bits caps it.
const MAX_RANK: u16 = 64 - REGISTER_BITS as u16 + 1;

/// The hash behind sketches, index shards and address fingerprints: the splitmix64
/// finaliser. Stored sketches and keys depend on it, so it must never change.
pub fn stable_hash(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A HyperLogLog (Flajolet et al., with linear counting for small counts) of `REGISTERS`
/// one-byte registers over [`stable_hash`], so estimates are the same run to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HyperLogLog<const REGISTERS: usize> {
    registers: [u8; REGISTERS],
}

impl<const REGISTERS: usize> Default for HyperLogLog<REGISTERS> {
    fn default() -> Self {
        HyperLogLog {
            registers: [0; REGISTERS],
        }
    }
}

impl<const REGISTERS: usize> HyperLogLog<REGISTERS> {
    const INDEX_BITS: u32 = REGISTERS.trailing_zeros();

    /// Adds one value.
    pub fn insert(&mut self, value: u64) {
        let hash = stable_hash(value);
        let register = (hash >> (64 - Self::INDEX_BITS)) as usize;
        // Rank of the first set bit in the remaining bits; the guard bit caps it.
        let rest = (hash << Self::INDEX_BITS) | (1 << (Self::INDEX_BITS - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        self.registers[register] = self.registers[register].max(rank);
    }

    /// Whether no value was added.
    pub fn is_empty(&self) -> bool {
        self.registers.iter().all(|&rank| rank == 0)
    }

    /// The estimated number of distinct values: linear counting while registers are still
    /// empty (small counts, which it gets right or within one), HyperLogLog above.
    pub fn estimate(&self) -> u64 {
        let m = REGISTERS as f64;
        let zeros = self.registers.iter().filter(|&&rank| rank == 0).count();
        if zeros == REGISTERS {
            return 0;
        }
        let sum: f64 = self
            .registers
            .iter()
            .map(|&rank| 2f64.powi(-i32::from(rank)))
            .sum();
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        (estimate.round() as u64).max(1)
    }
}

/// The sketch stored with counters: [`SKETCH_REGISTERS`] registers, mergeable through the
/// set union of its [`elements`](DistinctSketch::elements).
pub type DistinctSketch = HyperLogLog<SKETCH_REGISTERS>;

impl DistinctSketch {
    /// The sketch of some values (duplicates count once).
    pub fn from_values(values: impl IntoIterator<Item = u64>) -> Self {
        let mut sketch = DistinctSketch::default();
        for value in values {
            sketch.insert(value);
        }
        sketch
    }

    /// The element one value contributes: `register * 64 + rank`. A stored set's elements
    /// are each the element of one of the values it was built from.
    pub fn element_of(value: u64) -> u16 {
        let mut one = DistinctSketch::default();
        one.insert(value);
        one.elements()[0]
    }

    /// The stored form: `register * 64 + rank` for every non-zero register, ascending.
    pub fn elements(&self) -> Vec<u16> {
        self.registers
            .iter()
            .enumerate()
            .filter(|&(_, &rank)| rank > 0)
            .map(|(register, &rank)| (register as u16) << 6 | u16::from(rank))
            .collect()
    }

    /// The sketch behind a stored set of elements, which may be the union of many
    /// deliveries' elements; elements that no sketch writes are ignored.
    pub fn from_elements(elements: impl IntoIterator<Item = u64>) -> Self {
        let mut sketch = DistinctSketch::default();
        for element in elements {
            let (register, rank) = ((element >> 6) as usize, (element & 63) as u8);
            if register < SKETCH_REGISTERS && (1..=MAX_RANK as u8).contains(&rank) {
                sketch.registers[register] = sketch.registers[register].max(rank);
            }
        }
        sketch
    }
}

/// The standard error of an estimate of `truth` distinct values, relative to it: linear
/// counting's (Whang et al.) while registers are still empty, HyperLogLog's above.
pub fn relative_standard_error(truth: u64) -> f64 {
    let m = SKETCH_REGISTERS as f64;
    let n = truth.max(1) as f64;
    if n <= 2.5 * m {
        let load = n / m;
        (m * (load.exp() - load - 1.0)).sqrt() / n
    } else {
        1.04 / m.sqrt()
    }
}

/// Whether `estimate` is within one plus four standard errors of `truth`: the bound tests
/// of stored counts hold estimates to.
pub fn within_expected_error(estimate: u64, truth: u64) -> bool {
    let allowed = 1.0 + 4.0 * relative_standard_error(truth) * truth as f64;
    (estimate as f64 - truth as f64).abs() <= allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relative_error(estimate: u64, truth: u64) -> f64 {
        (estimate as f64 - truth as f64).abs() / truth as f64
    }

    #[test]
    fn small_counts_come_out_exact_or_within_one() {
        assert_eq!(DistinctSketch::default().estimate(), 0);
        assert_eq!(DistinctSketch::from_values([22]).estimate(), 1);
        assert_eq!(
            DistinctSketch::from_values([22, 3389, 22, 443]).estimate(),
            3
        );
        for n in 1..=40u64 {
            let estimate = DistinctSketch::from_values(0..n).estimate();
            assert!(estimate.abs_diff(n) <= 1 + n / 20, "{n}: {estimate}");
        }
        for n in 1..=10u64 {
            let estimate = DistinctSketch::from_values((0..n).map(|v| v * 7_919)).estimate();
            assert_eq!(estimate, n);
        }
        for n in 1..=2_000u64 {
            let estimate = DistinctSketch::from_values((0..n).map(|v| v << 20)).estimate();
            assert!(within_expected_error(estimate, n), "{n}: {estimate}");
        }
    }

    #[test]
    fn large_counts_are_within_a_few_standard_errors() {
        for (n, seed) in [(1_000u64, 1u64), (65_536, 2), (1_000_000, 3)] {
            let estimate =
                DistinctSketch::from_values((0..n).map(|v| v * 2_654_435_761 + seed)).estimate();
            assert!(relative_error(estimate, n) < 0.2, "{n}: {estimate}");
        }
    }

    #[test]
    fn the_union_of_stored_elements_is_the_merged_sketch() {
        // Three deliveries of overlapping port ranges, as DynamoDB's set ADD would store them.
        let mut stored: Vec<u64> = Vec::new();
        for range in [0..30_000u64, 20_000..50_000, 45_000..65_536] {
            let elements = DistinctSketch::from_values(range).elements();
            stored.extend(elements.into_iter().map(u64::from));
        }
        stored.sort_unstable();
        stored.dedup();
        let merged = DistinctSketch::from_elements(stored.iter().copied());
        assert_eq!(merged, DistinctSketch::from_values(0..65_536));
        assert!(relative_error(merged.estimate(), 65_536) < 0.2);
    }

    #[test]
    fn stored_sets_stay_small_however_many_deliveries_add_to_them() {
        // A randomised sweep: 2,000 deliveries, each with 40 ports of its own.
        let mut stored = std::collections::BTreeSet::new();
        for delivery in 0..2_000u64 {
            let ports = (0..40u64).map(|i| (delivery * 40 + i) % 65_536);
            stored.extend(DistinctSketch::from_values(ports).elements());
        }
        assert!(
            stored.len() < SKETCH_REGISTERS * 8,
            "{} elements",
            stored.len()
        );
        let estimate = DistinctSketch::from_elements(stored.iter().map(|&e| u64::from(e)));
        assert!(relative_error(estimate.estimate(), 65_536) < 0.2);
    }

    #[test]
    fn foreign_elements_are_ignored() {
        let sketch = DistinctSketch::from_elements([0, 63, 70_000, 5 << 6]);
        assert!(sketch.is_empty());
    }

    #[test]
    fn the_stable_hash_is_fixed() {
        // Stored sketches and index shards depend on these values never changing.
        assert_eq!(stable_hash(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(
            DistinctSketch::from_values([22]).elements(),
            DistinctSketch::from_values([22]).elements()
        );
    }
}
