//! Helpers shared by the cross-crate tests and benchmarks: moto, the Lambda Runtime API
//! stub, the Invoke API stand-in, the fault proxy's driver, the chaos run and the scenario
//! runner. Nothing shipped depends on this crate (the CLI only in its tests); it may depend
//! on every other crate of the workspace.

pub mod chaos;
pub mod fault_proxy;
pub mod lambda_invoke;
pub mod moto;
pub mod runtime_api;
pub mod scenarios;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use rejectwatch_core::counters::{CounterUpdate, EXACT_VALUES, StoredCounter, shard_of};
use rejectwatch_core::decode::{DecodeError, DecodeLimits, ObjectDecoder, ObjectLines};
use rejectwatch_core::flow_log::FlowFormat;
use rejectwatch_core::sketch::within_expected_error;
use rejectwatch_core::tally::{RejectTally, TallyOptions};
use rejectwatch_testkit::generate::Expected;

/// Bytes handed to the decoder per call, as an S3 body or a file read delivers them.
pub const CHUNK_BYTES: usize = 256 << 10;

/// Decodes, parses and tallies a whole object held in memory, in `CHUNK_BYTES` pieces.
pub fn tally_object(object: &[u8], options: TallyOptions) -> Result<RejectTally, DecodeError> {
    let lines = ObjectLines::new(FlowFormat::default(), RejectTally::new(options));
    let mut decoder = ObjectDecoder::new(lines, DecodeLimits::default());
    for chunk in object.chunks(CHUNK_BYTES) {
        decoder.write(chunk)?;
    }
    Ok(decoder.finish()?.into_records())
}

/// A counter update as ingest would write it for one source in one five-minute window:
/// `rejects` REJECTs (TCP) to ports 1..=`ports` of hosts 10.0.0.1..=10.0.0.`hosts`, from
/// one interface, over the 16 index shards the functions default to.
pub fn counter_update(
    source: &str,
    window: u64,
    rejects: u64,
    ports: u16,
    hosts: u32,
) -> CounterUpdate {
    let source: IpAddr = source.parse().expect("a source address");
    CounterUpdate {
        source,
        window_start: window,
        window_seconds: 300,
        shard: shard_of(source, 16),
        rejects,
        packets: rejects,
        bytes: rejects * 44,
        first_seen: window + 3,
        last_seen: window + 280,
        port_sketch: Vec::new(),
        host_sketch: Vec::new(),
        exact_ports: None,
        exact_hosts: None,
        sample_ports: Vec::new(),
        sample_hosts: Vec::new(),
        protocols: vec![(6, rejects)],
        reject_reasons: Vec::new(),
        interfaces: vec!["eni-0a1b2c3d4e5f00001".into()],
    }
    .with_destinations(
        1..=ports,
        (1..=hosts).map(|host| u64::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + host)),
    )
}

/// The stored rows (keyed by source and window, as `moto::counter_rows` reads them) equal
/// the generator's truth, row by row.
pub fn assert_counts_match(rows: &HashMap<(String, u64), StoredCounter>, expected: &Expected) {
    assert_eq!(rows.len(), expected.per_source.len(), "rows");
    for (key, truth) in &expected.per_source {
        let row = &rows[&(key.source.to_string(), key.window_start)];
        assert_eq!(
            (row.rejects, row.packets, row.bytes),
            (truth.rejects, truth.packets, truth.bytes),
            "{key:?}"
        );
        for ((counted, exact), actual) in [
            (row.distinct_dst_ports(), truth.dst_ports.len()),
            (row.distinct_dst_hosts(), truth.dst_addrs.len()),
        ] {
            // Up to `EXACT_VALUES` distinct values a row counts exactly; above, the sketch
            // estimates.
            if actual <= EXACT_VALUES {
                assert_eq!((counted, exact), (actual as u64, true), "{key:?}");
            } else {
                assert!(
                    within_expected_error(counted, actual as u64),
                    "{key:?}: {counted} for {actual}"
                );
            }
        }
    }
}
