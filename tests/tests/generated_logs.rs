//! The core against the generator's own truth: every REJECT the generator wrote is counted
//! once, in the right (source, window), through every delivery shape.

use std::collections::HashMap;

use rejectwatch_core::decode::{decode_subscription_event, parse_log_data};
use rejectwatch_core::flow_log::{FlowFormat, RecordParser};
use rejectwatch_core::tally::{RejectTally, SourceWindow, TallyOptions};
use rejectwatch_testkit::generate::{
    CUSTOM_25_FIELDS, Expected, FlowLogGenerator, GeneratorConfig,
};
use rejectwatch_tests::tally_object;

fn config(records: u64, format: FlowFormat) -> GeneratorConfig {
    GeneratorConfig {
        records,
        format,
        seed: 42,
        ..GeneratorConfig::default()
    }
}

/// Compares a tally with the truth, aggregate by aggregate.
fn assert_matches_truth(tally: &RejectTally, expected: &Expected) {
    let totals = tally.totals();
    assert_eq!(totals.records, expected.records, "records");
    assert_eq!(totals.rejects, expected.rejects, "rejects");
    assert_eq!(totals.nodata, expected.nodata, "nodata");
    assert_eq!(totals.skipdata, expected.skipdata, "skipdata");
    assert_eq!(totals.uncountable, expected.uncountable, "uncountable");
    assert_eq!(totals.malformed, 0, "malformed");
    assert_eq!(totals.sources, expected.sources(), "sources");
    assert_eq!(tally.len(), expected.per_source.len(), "aggregates");
    let counted: HashMap<SourceWindow, _> = tally
        .aggregates()
        .map(|aggregate| (aggregate.key, aggregate))
        .collect();
    for (key, truth) in &expected.per_source {
        let aggregate = counted
            .get(key)
            .unwrap_or_else(|| panic!("{key:?} was not counted"));
        assert_eq!(aggregate.rejects(), truth.rejects, "{key:?} rejects");
        assert_eq!(aggregate.packets(), truth.packets, "{key:?} packets");
        assert_eq!(aggregate.bytes(), truth.bytes, "{key:?} bytes");
        assert_eq!(
            aggregate.distinct_dst_ports() as usize,
            truth.dst_ports.len(),
            "{key:?} ports"
        );
        assert_eq!(
            aggregate.distinct_dst_addrs() as usize,
            truth.dst_addrs.len(),
            "{key:?} hosts"
        );
    }
}

#[test]
fn gzip_object_in_three_members_is_counted_exactly() {
    let mut generator = FlowLogGenerator::new(config(200_000, FlowFormat::default()));
    let mut object = Vec::new();
    generator.write_gzip(&mut object, 3).unwrap();
    let tally = tally_object(&object, TallyOptions::default()).unwrap();
    assert_matches_truth(&tally, generator.expected());
}

#[test]
fn custom_25_field_text_object_is_counted_exactly() {
    let format = FlowFormat::from_fields(&CUSTOM_25_FIELDS);
    let mut generator = FlowLogGenerator::new(config(100_000, format));
    let mut object = Vec::new();
    generator.write_text(&mut object).unwrap();
    let tally = tally_object(&object, TallyOptions::default()).unwrap();
    assert_matches_truth(&tally, generator.expected());
}

#[test]
fn cloudwatch_payloads_are_counted_exactly() {
    let mut generator = FlowLogGenerator::new(config(50_000, FlowFormat::default()));
    let payloads = generator.cloudwatch_payloads(1_000, "/vpc/flow-logs");
    assert_eq!(payloads.len(), 50);
    let mut parser = RecordParser::new(FlowFormat::default());
    let mut tally = RejectTally::default();
    for payload in &payloads {
        let data = decode_subscription_event(payload.as_bytes()).unwrap();
        parse_log_data(&data, &mut parser, &mut tally).unwrap();
    }
    assert_matches_truth(&tally, generator.expected());
}

#[test]
fn planted_scanners_stand_out() {
    let mut generator = FlowLogGenerator::new(config(200_000, FlowFormat::default()));
    let mut object = Vec::new();
    generator.write_gzip(&mut object, 1).unwrap();
    let tally = tally_object(&object, TallyOptions::default()).unwrap();
    let expected = generator.expected();
    let widest_benign_ports = tally
        .aggregates()
        .filter(|aggregate| {
            !expected
                .scanners
                .iter()
                .any(|(addr, _)| *addr == aggregate.key.source)
        })
        .map(|aggregate| aggregate.distinct_dst_ports())
        .max()
        .unwrap();
    for (scanner, _) in &expected.scanners {
        let widest = tally
            .aggregates()
            .filter(|aggregate| aggregate.key.source == *scanner)
            .map(|aggregate| {
                aggregate
                    .distinct_dst_ports()
                    .max(aggregate.distinct_dst_addrs() as u32)
            })
            .max()
            .unwrap();
        assert!(
            widest > 10 * widest_benign_ports,
            "{scanner}: {widest} vs {widest_benign_ports}"
        );
    }
}

#[test]
fn nat_format_without_action_counts_nothing_and_says_so() {
    let format = FlowFormat::from_log_format(
        "${instance-id} ${interface-id} ${srcaddr} ${dstaddr} ${pkt-srcaddr} ${pkt-dstaddr}",
    )
    .unwrap();
    let mut generator = FlowLogGenerator::new(config(5_000, format));
    let mut object = Vec::new();
    generator.write_text(&mut object).unwrap();
    let tally = tally_object(&object, TallyOptions::default()).unwrap();
    assert_eq!(tally.totals().rejects, 0);
    assert_eq!(tally.totals().uncountable, 5_000);
    assert_matches_truth(&tally, generator.expected());
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let object = |seed| {
        let mut bytes = Vec::new();
        FlowLogGenerator::new(GeneratorConfig {
            seed,
            ..config(2_000, FlowFormat::default())
        })
        .write_text(&mut bytes)
        .unwrap();
        bytes
    };
    assert_eq!(object(5), object(5));
    assert_ne!(object(5), object(6));
}
