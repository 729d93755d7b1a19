//! What one delivery adds to the stored counters: one [`CounterUpdate`] per (source,
//! window), one [`GapUpdate`] per (interface, window) with NODATA/SKIPDATA, and the
//! [`BatchId`] that lets the store apply each of them at most once however often AWS
//! delivers the same object or batch.
//!
//! Pure: built from a [`RejectTally`] and the delivery's identity; no I/O, no clock.

use std::fmt;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::settle::is_settled;
use crate::sketch::{DistinctSketch, stable_hash};
use crate::tally::{RejectTally, SourceAggregate, address_fingerprint};

/// Identifies one delivery (an S3 object version, or a CloudWatch Logs batch): 32 hex
/// digits of a SHA-256 over a canonical description, stable across releases.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(String);

impl BatchId {
    /// An S3 object: bucket, (decoded) key, and the version id or, without versioning, the
    /// ETag, so that an overwritten object counts again but a re-delivered one does not.
    pub fn for_s3_object(
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        etag: Option<&str>,
    ) -> Self {
        BatchId::from_parts(&[
            "s3",
            bucket,
            key,
            version_id.unwrap_or(""),
            etag.unwrap_or(""),
        ])
    }

    /// A CloudWatch Logs batch: log group, log stream, and every event id in it.
    pub fn for_cloudwatch_batch<'a>(
        log_group: &'a str,
        log_stream: &'a str,
        event_ids: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut parts = vec!["cloudwatch", log_group, log_stream];
        parts.extend(event_ids);
        BatchId::from_parts(&parts)
    }

    fn from_parts(parts: &[&str]) -> Self {
        let mut hasher = Sha256::new();
        for part in parts {
            // Length-prefixed, so no two part lists hash the same input.
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let digest = hasher.finalize();
        BatchId(
            digest[..16]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
        )
    }

    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A batch id as stored (for tests and fakes); `None` unless it is 32 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| BatchId(text.to_ascii_lowercase()))
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest reject reason stored as its own counter; longer or odd ones count as `other`.
const MAX_REASON_LENGTH: usize = 32;
/// Reject reasons per row and delivery stored under their own names.
const NAMED_REASONS: usize = 4;
/// Destination ports kept per row as examples.
pub const PORT_EXAMPLES: usize = 10;
/// Destination addresses kept per row as examples.
pub const HOST_EXAMPLES: usize = 5;
/// Distinct destination ports, and destination fingerprints, kept exactly per row before the
/// row falls back to its sketch: a count at or near any default threshold is exact, where the
/// 1,024-register sketch stores two values of a register as one (10,698 of the 65,516
/// contiguous 20-port ranges would count 19). A stored set of exact values never holds more
/// than this plus one marker, so an item grows by at most about 0.3 KB of ports and 0.7 KB of
/// IPv6 fingerprints (0.4 KB for IPv4).
pub const EXACT_VALUES: usize = 64;
/// Row updates per stored chunk. A chunk and its ledger item are one DynamoDB transaction,
/// which takes at most 100 actions. Deliveries already partly applied are re-chunked the
/// same way on retry only while this stays the same, so it must never change.
pub const ROWS_PER_CHUNK: usize = 99;

/// What one delivery adds to the counters of one (source, window).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterUpdate {
    pub source: IpAddr,
    pub window_start: u64,
    pub window_seconds: u64,
    /// Which of the window's index partitions the row lives in (see [`shard_of`]).
    pub shard: u8,
    pub rejects: u64,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen: u64,
    pub last_seen: u64,
    /// The distinct-port sketch's elements (see [`crate::sketch`]).
    pub port_sketch: Vec<u16>,
    /// The distinct-destination sketch's elements, over address fingerprints.
    pub host_sketch: Vec<u16>,
    /// This delivery's destination ports, all of them, when there are at most
    /// [`EXACT_VALUES`]; `None` when there are more (the row's exact count is then over).
    pub exact_ports: Option<Vec<u16>>,
    /// This delivery's destination fingerprints, likewise.
    pub exact_hosts: Option<Vec<u64>>,
    /// The smallest destination ports, at most [`PORT_EXAMPLES`]: examples for alerts.
    pub sample_ports: Vec<u16>,
    /// The smallest destination-address fingerprints, at most [`HOST_EXAMPLES`].
    pub sample_hosts: Vec<u64>,
    /// REJECTs per IANA protocol number.
    pub protocols: Vec<(u8, u64)>,
    /// REJECTs per reject reason, names limited to `[A-Za-z0-9_-]{1,32}` (else `other`).
    pub reject_reasons: Vec<(String, u64)>,
    /// Up to three interfaces that logged the REJECTs.
    pub interfaces: Vec<String>,
}

/// NODATA/SKIPDATA reports of one interface in one window, from one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GapUpdate {
    pub interface: String,
    pub window_start: u64,
    /// Which of the window's gap partitions the row lives in (see [`gap_shard_of`]).
    pub shard: u8,
    pub nodata: u64,
    pub skipdata: u64,
}

/// Everything one delivery adds to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterBatch {
    pub id: BatchId,
    /// One per (source, window), ordered by source then window.
    pub updates: Vec<CounterUpdate>,
    /// One per (interface, window) with NODATA or SKIPDATA records.
    pub gaps: Vec<GapUpdate>,
}

impl CounterBatch {
    /// The updates of a tally, in a stable order, with rows spread over `shards` index
    /// partitions per window.
    pub fn from_tally(id: BatchId, tally: &RejectTally, shards: u8) -> Self {
        let window_seconds = tally.options().window_seconds;
        let mut updates: Vec<CounterUpdate> = tally
            .aggregates()
            .map(|aggregate| counter_update(&aggregate, window_seconds, shards))
            .collect();
        updates.sort_by_key(|update| (update.source, update.window_start));
        let gaps = tally
            .capture_gaps()
            .into_iter()
            .map(|(interface, window_start, gaps)| GapUpdate {
                interface: interface.to_owned(),
                window_start,
                shard: gap_shard_of(interface, shards),
                nodata: gaps.nodata,
                skipdata: gaps.skipdata,
            })
            .collect();
        CounterBatch { id, updates, gaps }
    }

    /// Whether the delivery adds nothing (only ACCEPTs, or a control message).
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.gaps.is_empty()
    }

    /// The counter rows whose window had settled at `now` (see
    /// [`crate::settle::is_settled`]): their count, and their windows, oldest first.
    /// (Capture-gap rows only qualify counts, so they are left out.)
    pub fn late_rows(&self, settle_seconds: u64, now: u64) -> LateRows {
        let mut late = LateRows::default();
        for update in &self.updates {
            if is_settled(
                update.window_start,
                update.window_seconds,
                settle_seconds,
                now,
            ) {
                late.rows += 1;
                late.windows.push(update.window_start);
            }
        }
        late.windows.sort_unstable();
        late.windows.dedup();
        late
    }

    /// The rows in stored chunks of [`ROWS_PER_CHUNK`]: counters first, then gaps, in the
    /// batch's stable order, so every delivery of the same input chunks alike.
    pub fn chunks(&self) -> Vec<BatchChunk<'_>> {
        let rows: Vec<RowUpdate<'_>> = self
            .updates
            .iter()
            .map(RowUpdate::Counter)
            .chain(self.gaps.iter().map(RowUpdate::Gap))
            .collect();
        rows.chunks(ROWS_PER_CHUNK)
            .enumerate()
            .map(|(index, rows)| BatchChunk {
                batch: &self.id,
                index,
                rows: rows.to_vec(),
            })
            .collect()
    }
}

/// Counter rows of a batch that arrived after their window settled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LateRows {
    pub rows: u64,
    /// The windows they belong to, oldest first.
    pub windows: Vec<u64>,
}

/// One row a chunk changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowUpdate<'a> {
    Counter(&'a CounterUpdate),
    Gap(&'a GapUpdate),
}

/// Up to [`ROWS_PER_CHUNK`] rows of a batch, applied all together or not at all, at most
/// once: the unit of exactly-once counting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchChunk<'a> {
    pub batch: &'a BatchId,
    /// The chunk's place in the batch, from 0.
    pub index: usize,
    pub rows: Vec<RowUpdate<'a>>,
}

fn counter_update(
    aggregate: &SourceAggregate<'_>,
    window_seconds: u64,
    shards: u8,
) -> CounterUpdate {
    let summary = aggregate.summary();
    let ports = aggregate.dst_ports();
    // The most frequent few reasons keep their names; the rest count as `other`, so a
    // row never gains more than a few attributes from log text.
    let mut named = summary.reject_reasons;
    named.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut reasons: Vec<(String, u64)> = Vec::new();
    for (rank, (reason, count)) in named.into_iter().enumerate() {
        let name = if rank < NAMED_REASONS && is_safe_reason(reason) {
            reason
        } else {
            "other"
        };
        match reasons.iter_mut().find(|(known, _)| known == name) {
            Some((_, total)) => *total += count,
            None => reasons.push((name.to_owned(), count)),
        }
    }
    CounterUpdate {
        source: summary.key.source,
        window_start: summary.key.window_start,
        window_seconds,
        shard: shard_of(summary.key.source, shards),
        rejects: summary.rejects,
        packets: summary.packets,
        bytes: summary.bytes,
        first_seen: summary.first_seen,
        last_seen: summary.last_seen,
        port_sketch: aggregate.dst_port_sketch().elements(),
        host_sketch: aggregate.dst_host_sketch().elements(),
        exact_ports: (ports.len() <= EXACT_VALUES).then(|| ports.clone()),
        exact_hosts: (aggregate.dst_addrs_exact()
            && aggregate.distinct_dst_addrs() <= EXACT_VALUES as u64)
            .then(|| aggregate.dst_host_examples(EXACT_VALUES)),
        sample_ports: {
            let mut ports = ports;
            ports.truncate(PORT_EXAMPLES);
            ports
        },
        sample_hosts: aggregate.dst_host_examples(HOST_EXAMPLES),
        protocols: summary.protocols.to_vec(),
        reject_reasons: reasons,
        interfaces: summary
            .interfaces
            .iter()
            .map(|&name| name.to_owned())
            .collect(),
    }
}

/// Reject reasons come from log lines; only plain short names become attribute names.
fn is_safe_reason(reason: &str) -> bool {
    !reason.is_empty()
        && reason.len() <= MAX_REASON_LENGTH
        && reason
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The index partition of a source: a stable hash of its address, modulo `shards`.
///
/// Every invocation writes rows of the current window; spreading them over `shards`
/// partitions keeps one window from being capped by a single partition's write rate.
pub fn shard_of(source: IpAddr, shards: u8) -> u8 {
    (stable_hash(address_fingerprint(source)) % u64::from(shards.max(1))) as u8
}

/// The gap partition of an interface: a stable hash of its id, modulo `shards`, so that
/// the NODATA reports of thousands of interfaces do not all land on one partition.
pub fn gap_shard_of(interface: &str, shards: u8) -> u8 {
    let hash = interface
        .bytes()
        .fold(0u64, |hash, byte| stable_hash(hash ^ u64::from(byte)));
    (hash % u64::from(shards.max(1))) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_log::{FlowFormat, RecordParser};
    use crate::tally::TallyOptions;

    fn tally(lines: &[&str]) -> RejectTally {
        let format = FlowFormat::from_log_format(
            "${interface-id} ${srcaddr} ${dstaddr} ${dstport} ${protocol} ${start} ${action} ${log-status} ${reject-reason}",
        )
        .unwrap();
        let mut parser = RecordParser::new(format);
        let mut tally = RejectTally::new(TallyOptions::default());
        for line in lines {
            tally.add(&parser.parse(line).unwrap());
        }
        tally
    }

    #[test]
    fn a_row_names_at_most_a_few_reject_reasons_and_counts_the_rest_as_other() {
        let lines: Vec<String> = [
            "BPA", "BPA", "BPA", "A1", "A1", "B2", "C3", "D4", "E5", "x.y",
        ]
        .iter()
        .map(|reason| format!("eni-1 10.0.0.9 10.0.1.1 22 6 1700000000 REJECT OK {reason}"))
        .collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let id = BatchId::for_s3_object("bucket", "key", None, Some("etag"));
        let batch = CounterBatch::from_tally(id, &tally(&lines), 8);
        let mut reasons = batch.updates[0].reject_reasons.clone();
        reasons.sort();
        assert_eq!(
            reasons,
            vec![
                ("A1".to_owned(), 2),
                ("B2".to_owned(), 1),
                ("BPA".to_owned(), 3),
                ("C3".to_owned(), 1),
                ("other".to_owned(), 3),
            ]
        );
    }

    #[test]
    fn an_ipv4_source_and_its_ipv4_mapped_form_share_one_row() {
        let tally = tally(&[
            "eni-1 198.51.100.7 10.0.1.1 22 6 1700000000 REJECT OK -",
            "eni-1 ::ffff:198.51.100.7 ::ffff:10.0.1.1 23 6 1700000001 REJECT OK -",
        ]);
        let id = BatchId::for_s3_object("bucket", "key", None, Some("etag"));
        let batch = CounterBatch::from_tally(id, &tally, 8);
        assert_eq!(batch.updates.len(), 1);
        let row = &batch.updates[0];
        assert_eq!(row.source.to_string(), "198.51.100.7");
        assert_eq!((row.rejects, row.sample_ports.clone()), (2, vec![22, 23]));
    }

    #[test]
    fn rows_of_settled_windows_are_late() {
        let tally = tally(&[
            "eni-1 10.0.0.9 10.0.1.1 22 6 1700000000 REJECT OK -",
            "eni-1 10.0.0.9 10.0.1.1 22 6 1700000400 REJECT OK -",
            "eni-1 10.0.0.2 10.0.1.1 22 6 1700000000 REJECT OK -",
        ]);
        let id = BatchId::for_s3_object("bucket", "key", None, Some("etag"));
        let batch = CounterBatch::from_tally(id, &tally, 8);
        // Window 1_699_999_800 ends at 1_700_000_100 and settles 600 s later.
        assert_eq!(batch.late_rows(600, 1_700_000_699), LateRows::default());
        assert_eq!(
            batch.late_rows(600, 1_700_000_700),
            LateRows {
                rows: 2,
                windows: vec![1_699_999_800]
            }
        );
    }

    #[test]
    fn one_update_per_source_and_window_in_a_stable_order() {
        let tally = tally(&[
            "eni-1 10.0.0.9 10.0.1.1 22 6 1700000000 REJECT OK -",
            "eni-1 10.0.0.2 10.0.1.1 22 6 1700000000 REJECT OK -",
            "eni-2 10.0.0.9 10.0.1.2 23 6 1700000001 REJECT OK BPA",
            "eni-1 10.0.0.9 10.0.1.1 22 6 1700000400 REJECT OK -",
            "eni-3 - - - - 1700000000 - SKIPDATA -",
        ]);
        let id = BatchId::for_s3_object("bucket", "key", None, Some("etag"));
        let batch = CounterBatch::from_tally(id, &tally, 8);
        let keys: Vec<(String, u64)> = batch
            .updates
            .iter()
            .map(|u| (u.source.to_string(), u.window_start))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("10.0.0.2".into(), 1_699_999_800),
                ("10.0.0.9".into(), 1_699_999_800),
                ("10.0.0.9".into(), 1_700_000_400)
            ]
        );
        let first = &batch.updates[1];
        assert_eq!(
            (first.rejects, first.sample_ports.clone()),
            (2, vec![22, 23])
        );
        assert_eq!(
            DistinctSketch::from_elements(first.port_sketch.iter().map(|&e| u64::from(e)))
                .estimate(),
            2
        );
        assert_eq!(first.interfaces, vec!["eni-1", "eni-2"]);
        assert_eq!(first.reject_reasons, vec![("BPA".to_owned(), 1)]);
        assert_eq!(first.sample_hosts.len(), 2);
        assert_eq!(first.host_sketch.len(), 2);
        assert_eq!(
            batch.gaps,
            vec![GapUpdate {
                interface: "eni-3".into(),
                window_start: 1_699_999_800,
                shard: gap_shard_of("eni-3", 8),
                nodata: 0,
                skipdata: 1
            }]
        );
    }

    #[test]
    fn odd_reject_reasons_are_counted_as_other() {
        let tally = tally(&[
            "eni-1 10.0.0.9 10.0.1.1 22 6 1700000000 REJECT OK ${jndi:ldap://x}",
            "eni-1 10.0.0.9 10.0.1.1 22 6 1700000000 REJECT OK a\"b",
        ]);
        let batch =
            CounterBatch::from_tally(BatchId::for_s3_object("b", "k", None, None), &tally, 1);
        assert_eq!(
            batch.updates[0].reject_reasons,
            vec![("other".to_owned(), 2)]
        );
    }

    #[test]
    fn batch_ids_distinguish_versions_and_batches() {
        let a = BatchId::for_s3_object("bucket", "key", None, Some("\"abc\""));
        assert_eq!(
            a,
            BatchId::for_s3_object("bucket", "key", None, Some("\"abc\""))
        );
        assert_ne!(
            a,
            BatchId::for_s3_object("bucket", "key", None, Some("\"abd\""))
        );
        assert_ne!(
            a,
            BatchId::for_s3_object("bucket", "key", Some("v2"), Some("\"abc\""))
        );
        assert_ne!(
            BatchId::for_s3_object("ab", "c", None, None),
            BatchId::for_s3_object("a", "bc", None, None)
        );
        let events = ["1", "2", "3"];
        let batch = BatchId::for_cloudwatch_batch("/vpc/flow", "eni-1-all", events);
        assert_eq!(
            batch,
            BatchId::for_cloudwatch_batch("/vpc/flow", "eni-1-all", events)
        );
        assert_ne!(
            batch,
            BatchId::for_cloudwatch_batch("/vpc/flow", "eni-1-all", ["1", "2"])
        );
        assert_eq!(batch.as_str().len(), 32);
        assert_eq!(BatchId::parse(batch.as_str()), Some(batch));
    }

    #[test]
    fn shards_are_stable_and_spread() {
        let shard = shard_of("203.0.113.9".parse().unwrap(), 16);
        assert_eq!(shard, shard_of("203.0.113.9".parse().unwrap(), 16));
        let used: std::collections::HashSet<u8> = (0..1000u32)
            .map(|i| shard_of(IpAddr::V4(i.into()), 16))
            .collect();
        assert_eq!(used.len(), 16);
        assert_eq!(shard_of("10.0.0.1".parse().unwrap(), 0), 0);
    }

    /// The row a store holds after these deliveries, each to ports `ports` of one host.
    fn stored_after(deliveries: &[Vec<u16>]) -> StoredCounter {
        let mut stored = StoredCounter::default();
        for (delivery, ports) in deliveries.iter().enumerate() {
            let lines: Vec<String> = ports
                .iter()
                .map(|port| {
                    format!("eni-{delivery} 10.0.0.9 10.0.1.1 {port} 6 1700000000 REJECT OK -")
                })
                .collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            let id = BatchId::for_s3_object("bucket", &format!("key-{delivery}"), None, None);
            let batch = CounterBatch::from_tally(id, &tally(&lines), 1);
            stored.merge(&batch.updates[0]);
        }
        stored
    }

    /// Issue 14: the sketch alone stores 10,698 of the 65,516 contiguous 20-port ranges as
    /// 19 ports, so a scanner sweeping one of them was missed every time.
    #[test]
    fn every_contiguous_20_port_range_is_counted_20() {
        let mut sketch_misses = 0;
        for first in 1..=65_516u16 {
            let ports: Vec<u16> = (first..=first + 19).collect();
            let stored = StoredCounter::default().with_destinations(ports, [1]);
            assert_eq!(stored.distinct_dst_ports(), (20, true), "ports {first}..");
            let sketch =
                DistinctSketch::from_elements(stored.port_sketch.iter().map(|&e| e.into()));
            sketch_misses += usize::from(sketch.estimate() != 20);
        }
        assert_eq!(sketch_misses, 10_698);
        // And through the tally, the update and the store's merge, for a range that the
        // sketch alone gets wrong.
        let missed = (1..=65_516u16)
            .find(|&first| {
                DistinctSketch::from_values((first..=first + 19).map(u64::from)).estimate() != 20
            })
            .unwrap();
        let stored = stored_after(&[(missed..=missed + 19).collect()]);
        assert_eq!(stored.distinct_dst_ports(), (20, true));
        assert_eq!(stored.distinct_dst_hosts(), (1, true));
    }

    #[test]
    fn exact_values_add_up_across_deliveries_until_the_bound() {
        // 10 + 10 ports, overlapping by 5: 15, exactly.
        let stored = stored_after(&[(1..=10).collect(), (6..=15).collect()]);
        assert_eq!(stored.distinct_dst_ports(), (15, true));
        assert_eq!(stored.exact_ports.values, (1..=15).collect::<Vec<u16>>());
        // The same 40 ports in every delivery stay 40: the union is what is bounded.
        let same: Vec<Vec<u16>> = (0..5).map(|_| (100..140).collect()).collect();
        assert_eq!(stored_after(&same).distinct_dst_ports(), (40, true));
        // Exactly the bound, then one more.
        let at_bound = stored_after(&[(1..=40).collect(), (41..=64).collect()]);
        assert_eq!(at_bound.distinct_dst_ports(), (64, true));
        let over = stored_after(&[(1..=40).collect(), (41..=65).collect()]);
        assert!(over.exact_ports.over && over.exact_ports.values.is_empty());
        let (estimate, _) = over.distinct_dst_ports();
        assert!(
            crate::sketch::within_expected_error(estimate, 65),
            "{estimate}"
        );
        // One delivery over the bound on its own offers no values.
        let update = &CounterBatch::from_tally(
            BatchId::for_s3_object("b", "k", None, None),
            &tally(
                &(1..=65)
                    .map(|port| format!("eni-1 10.0.0.9 10.0.1.1 {port} 6 1700000000 REJECT OK -"))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            ),
            1,
        )
        .updates[0];
        assert_eq!(update.exact_ports, None);
        assert_eq!(update.exact_hosts, Some(vec![0x0a00_0101]));
    }

    #[test]
    fn a_stored_set_stays_bounded_however_many_deliveries_add_to_it() {
        let deliveries: Vec<Vec<u16>> = (0..200u16)
            .map(|d| (d * 40..d * 40 + 40).collect())
            .collect();
        let stored = stored_after(&deliveries);
        assert!(stored.exact_ports.over);
        let (estimate, exact) = stored.distinct_dst_ports();
        assert!(!exact);
        assert!(
            crate::sketch::within_expected_error(estimate, 8_000),
            "{estimate}"
        );
    }

    #[test]
    fn values_that_do_not_explain_the_sketch_give_way_to_it() {
        // A delivery from a release without exact values added sketch elements only.
        let mut stored = StoredCounter::default().with_destinations(1..=10, [1]);
        let older = StoredCounter::default().with_destinations(11..=30, [1]);
        union_into(&mut stored.port_sketch, older.port_sketch.iter().copied());
        let (count, _) = stored.distinct_dst_ports();
        assert!(crate::sketch::within_expected_error(count, 30), "{count}");
        assert_ne!(count, 10);
        // Nor does a span with such a row count exactly.
        let mut span = StoredCounter::default().with_destinations(1..=10, [1]);
        let mut old_row = StoredCounter::default().with_destinations(11..=30, [1]);
        old_row.exact_ports = ExactValues::default();
        span.merge_destinations(&old_row);
        let (count, exact) = span.distinct_dst_ports();
        assert!(
            !exact && crate::sketch::within_expected_error(count, 30),
            "{count}"
        );
        assert_eq!(span.distinct_dst_hosts(), (1, true));
    }

    #[test]
    fn rows_taken_together_count_the_union_exactly() {
        let mut span = StoredCounter::default();
        for first in [1u16, 15, 29] {
            span.merge_destinations(
                &StoredCounter::default().with_destinations(first..first + 19, [7]),
            );
        }
        assert_eq!(span.distinct_dst_ports(), (47, true));
        assert_eq!(span.distinct_dst_hosts(), (1, true));
    }
}

/// A (source, window) row as stored: the sum of every delivery's [`CounterUpdate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredCounter {
    pub source: Option<IpAddr>,
    pub window_start: u64,
    pub window_seconds: u64,
    pub rejects: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Union of the deliveries' distinct-port sketch elements.
    pub port_sketch: Vec<u16>,
    /// Union of the deliveries' distinct-destination sketch elements.
    pub host_sketch: Vec<u16>,
    /// Union of the deliveries' exact ports, while there are few (see [`ExactValues`]).
    pub exact_ports: ExactValues<u16>,
    /// Union of the deliveries' exact destination fingerprints, likewise.
    pub exact_hosts: ExactValues<u64>,
    /// The first delivery's example ports.
    pub sample_ports: Vec<u16>,
    /// The first delivery's example destination fingerprints.
    pub sample_hosts: Vec<u64>,
    /// Each delivery's earliest `start`.
    pub first_seen: Vec<u64>,
    /// Each delivery's latest `end`.
    pub last_seen: Vec<u64>,
    /// The first delivery's example interfaces.
    pub interfaces: Vec<String>,
    pub protocols: Vec<(u8, u64)>,
    pub reject_reasons: Vec<(String, u64)>,
}

/// Distinct counts below this are shown as exact: the sketch gets them right in more
/// than 97% of cases (and one under otherwise); larger ones are shown as estimates.
pub const EXACT_DISTINCT_BELOW: u64 = 8;

impl StoredCounter {
    /// Adds one delivery's update the way the store does: sums for counters, unions for
    /// sketches and times, and the examples of whichever delivery came first.
    pub fn merge(&mut self, update: &CounterUpdate) {
        self.source = Some(update.source);
        self.window_start = update.window_start;
        self.window_seconds = update.window_seconds;
        self.rejects += update.rejects;
        self.packets += update.packets;
        self.bytes += update.bytes;
        union_into(&mut self.port_sketch, update.port_sketch.iter().copied());
        union_into(&mut self.host_sketch, update.host_sketch.iter().copied());
        self.exact_ports.add(update.exact_ports.as_deref());
        self.exact_hosts.add(update.exact_hosts.as_deref());
        keep_first(&mut self.sample_ports, &update.sample_ports);
        keep_first(&mut self.sample_hosts, &update.sample_hosts);
        keep_first(&mut self.interfaces, &update.interfaces);
        union_into(&mut self.first_seen, [update.first_seen]);
        union_into(&mut self.last_seen, [update.last_seen]);
        add_counts(&mut self.protocols, update.protocols.iter().copied());
        add_counts(
            &mut self.reject_reasons,
            update.reject_reasons.iter().cloned(),
        );
    }

    /// The row with the destination fields a store holds for exactly these ports and
    /// host fingerprints (sketches, exact values and examples): for fixtures and tests.
    pub fn with_destinations(
        mut self,
        ports: impl IntoIterator<Item = u16>,
        hosts: impl IntoIterator<Item = u64>,
    ) -> Self {
        let destinations = Destinations::of(ports, hosts);
        self.port_sketch = destinations.port_sketch;
        self.host_sketch = destinations.host_sketch;
        self.exact_ports = ExactValues::default();
        self.exact_ports.add(destinations.exact_ports.as_deref());
        self.exact_hosts = ExactValues::default();
        self.exact_hosts.add(destinations.exact_hosts.as_deref());
        self.sample_ports = destinations.sample_ports;
        self.sample_hosts = destinations.sample_hosts;
        self
    }

    /// Adds another row's destinations (sketches and exact values) the way the store merges
    /// deliveries: for the distinct counts of rows taken together, as over a span.
    pub fn merge_destinations(&mut self, other: &StoredCounter) {
        union_into(&mut self.port_sketch, other.port_sketch.iter().copied());
        union_into(&mut self.host_sketch, other.host_sketch.iter().copied());
        self.exact_ports
            .merge(&known_values(&other.exact_ports, &other.port_sketch));
        self.exact_hosts
            .merge(&known_values(&other.exact_hosts, &other.host_sketch));
    }

    /// Distinct destination ports, and whether the count is exact: the exact values
    /// while the row has them (see [`ExactValues`]), else a sketch estimate, taken as
    /// exact below [`EXACT_DISTINCT_BELOW`].
    pub fn distinct_dst_ports(&self) -> (u64, bool) {
        distinct(&self.exact_ports, &self.port_sketch, u64::from)
    }

    /// Distinct destination addresses, likewise.
    pub fn distinct_dst_hosts(&self) -> (u64, bool) {
        distinct(&self.exact_hosts, &self.host_sketch, |fingerprint| {
            fingerprint
        })
    }

    /// The earliest `start` of any delivery.
    pub fn first_seen(&self) -> Option<u64> {
        self.first_seen.iter().min().copied()
    }

    /// The latest `end` of any delivery.
    pub fn last_seen(&self) -> Option<u64> {
        self.last_seen.iter().max().copied()
    }
}

impl CounterUpdate {
    /// The update with the destination fields of exactly these ports and host
    /// fingerprints (sketches and examples): for fixtures and tests.
    pub fn with_destinations(
        mut self,
        ports: impl IntoIterator<Item = u16>,
        hosts: impl IntoIterator<Item = u64>,
    ) -> Self {
        let destinations = Destinations::of(ports, hosts);
        self.port_sketch = destinations.port_sketch;
        self.host_sketch = destinations.host_sketch;
        self.exact_ports = destinations.exact_ports;
        self.exact_hosts = destinations.exact_hosts;
        self.sample_ports = destinations.sample_ports;
        self.sample_hosts = destinations.sample_hosts;
        self
    }
}

/// The stored destination fields of a set of ports and host fingerprints.
struct Destinations {
    port_sketch: Vec<u16>,
    host_sketch: Vec<u16>,
    exact_ports: Option<Vec<u16>>,
    exact_hosts: Option<Vec<u64>>,
    sample_ports: Vec<u16>,
    sample_hosts: Vec<u64>,
}

impl Destinations {
    fn of(ports: impl IntoIterator<Item = u16>, hosts: impl IntoIterator<Item = u64>) -> Self {
        let mut ports: Vec<u16> = ports.into_iter().collect();
        let mut hosts: Vec<u64> = hosts.into_iter().collect();
        ports.sort_unstable();
        ports.dedup();
        hosts.sort_unstable();
        hosts.dedup();
        let port_sketch =
            DistinctSketch::from_values(ports.iter().map(|&port| u64::from(port))).elements();
        let host_sketch = DistinctSketch::from_values(hosts.iter().copied()).elements();
        let exact_ports = (ports.len() <= EXACT_VALUES).then(|| ports.clone());
        let exact_hosts = (hosts.len() <= EXACT_VALUES).then(|| hosts.clone());
        ports.truncate(PORT_EXAMPLES);
        hosts.truncate(HOST_EXAMPLES);
        Destinations {
            port_sketch,
            host_sketch,
            exact_ports,
            exact_hosts,
            sample_ports: ports,
            sample_hosts: hosts,
        }
    }
}

/// The exact count while `exact` holds every value the sketch was built from, else the
/// sketch's estimate. The values must explain the stored elements one by one (each is the
/// element of some value) and rebuild the same registers: a delivery stored without values
/// (an older release) shows as an element no value has, unless it matches one exactly.
fn distinct<T: Copy>(
    exact: &ExactValues<T>,
    sketch: &[u16],
    value_of: impl Fn(T) -> u64,
) -> (u64, bool) {
    let stored = DistinctSketch::from_elements(sketch.iter().map(|&e| u64::from(e)));
    if !exact.over && !exact.values.is_empty() {
        let mut elements: Vec<u16> = exact
            .values
            .iter()
            .map(|&v| DistinctSketch::element_of(value_of(v)))
            .collect();
        elements.sort_unstable();
        let explained = sketch.iter().all(|e| elements.binary_search(e).is_ok());
        if explained
            && DistinctSketch::from_values(exact.values.iter().map(|&v| value_of(v))) == stored
        {
            return (exact.values.len() as u64, true);
        }
    }
    let count = stored.estimate();
    (count, count < EXACT_DISTINCT_BELOW)
}

/// A row's values, or over when it has a sketch but no values (stored by an older
/// release): values that a union with other rows cannot know.
fn known_values<T: Clone>(exact: &ExactValues<T>, sketch: &[u16]) -> ExactValues<T> {
    if exact.values.is_empty() && !exact.over && !sketch.is_empty() {
        ExactValues {
            values: Vec::new(),
            over: true,
        }
    } else {
        exact.clone()
    }
}

/// A row's exact distinct values: the union of its deliveries' values while it stays at
/// most [`EXACT_VALUES`], else `over` (with no values). The store keeps the same bound: a
/// delivery adds its values on the condition `size(set) <= EXACT_VALUES - offered`; when
/// that fails, the item as it was tells whether the union fits, and the retry adds only
/// the values the set lacks, or marks it over.
///
/// The values count only while they explain the row's whole sketch: a delivery stored
/// without them (an older release) leaves registers they do not, and the sketch decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExactValues<T> {
    /// Ascending; empty when `over`.
    pub values: Vec<T>,
    pub over: bool,
}

impl<T> Default for ExactValues<T> {
    fn default() -> Self {
        ExactValues {
            values: Vec::new(),
            over: false,
        }
    }
}

impl<T: Ord + Copy> ExactValues<T> {
    /// Adds one delivery's values (`None`: more than [`EXACT_VALUES`]) as the store does.
    pub fn add(&mut self, offered: Option<&[T]>) {
        if self.over {
            return;
        }
        match offered {
            Some(values) => {
                union_into(&mut self.values, values.iter().copied());
                if self.values.len() > EXACT_VALUES {
                    self.mark_over();
                }
            }
            None => self.mark_over(),
        }
    }

    fn mark_over(&mut self) {
        self.values.clear();
        self.over = true;
    }

    /// The union with another row's values, unbounded: for counting rows together.
    pub fn merge(&mut self, other: &ExactValues<T>) {
        if other.over {
            self.mark_over();
        } else if !self.over {
            union_into(&mut self.values, other.values.iter().copied());
        }
    }
}

/// `if_not_exists`: the first delivery's examples stay.
fn keep_first<T: Clone>(kept: &mut Vec<T>, offered: &[T]) {
    if kept.is_empty() {
        kept.extend_from_slice(offered);
    }
}

fn union_into<T: Ord>(set: &mut Vec<T>, members: impl IntoIterator<Item = T>) {
    set.extend(members);
    set.sort();
    set.dedup();
}

fn add_counts<K: PartialEq>(counts: &mut Vec<(K, u64)>, more: impl IntoIterator<Item = (K, u64)>) {
    for (key, count) in more {
        match counts.iter_mut().find(|(known, _)| *known == key) {
            Some((_, total)) => *total += count,
            None => counts.push((key, count)),
        }
    }
}
