//! Tests of the tally: totals, aggregates and their details, the batch of waiting REJECTs,
//! rankings, and the bounded sets.

use super::bounded::PortSet;
use super::*;
use crate::flow_log::{FlowFormat, ParseError, RecordParser};

const ACCEPT: &str = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK";
const REJECT: &str = "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK";
const NODATA: &str =
    "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA";
const SKIPDATA: &str =
    "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA";
const ICMP_REJECT: &str = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 203.0.113.12 0 0 1 4 336 1432917094 1432917142 REJECT OK";

fn tally_lines(format: FlowFormat, options: TallyOptions, lines: &[&str]) -> RejectTally {
    let mut parser = RecordParser::new(format);
    let mut tally = RejectTally::new(options);
    for line in lines {
        tally.add(&parser.parse(line).unwrap());
    }
    tally
}

fn tally_default(lines: &[&str]) -> RejectTally {
    tally_lines(FlowFormat::default(), TallyOptions::default(), lines)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn documented_records_give_the_expected_totals() {
    let tally = tally_default(&[ACCEPT, REJECT, NODATA, SKIPDATA, ICMP_REJECT]);
    assert_eq!(
        tally.totals(),
        Totals {
            records: 5,
            rejects: 2,
            sources: 2,
            malformed: 0,
            nodata: 1,
            skipdata: 1,
            uncountable: 0,
            ignored: 0
        }
    );
}

#[test]
fn rejects_to_ignored_ports_are_left_out_of_every_aggregate() {
    let mut tally = RejectTally::new(TallyOptions::default());
    tally.ignore_dst_ports([3389, 123]);
    let mut parser = RecordParser::new(FlowFormat::default());
    for line in [REJECT, ICMP_REJECT] {
        tally.add(&parser.parse(line).unwrap());
    }
    let totals = tally.totals();
    assert_eq!((totals.rejects, totals.ignored, totals.sources), (1, 1, 1));
    assert!(
        tally
            .aggregates()
            .all(|aggregate| !aggregate.dst_ports().contains(&3389))
    );
}

#[test]
fn reject_lands_in_the_window_of_its_start() {
    let tally = tally_default(&[REJECT]);
    let key = SourceWindow {
        source: ip("172.31.9.69"),
        window_start: 1_418_529_900,
    };
    let stats = tally
        .get(&key)
        .expect("window of 1418530010 starts at 1418529900");
    assert_eq!(
        (stats.rejects(), stats.packets(), stats.bytes()),
        (1, 20, 4249)
    );
    assert_eq!(
        (stats.first_seen(), stats.last_seen()),
        (1_418_530_010, 1_418_530_070)
    );
    assert_eq!(stats.dst_ports(), vec![3389]);
    assert_eq!(stats.protocols(), vec![(6, 1)]);
    assert_eq!(stats.sample_interfaces(), vec!["eni-1235b8ca123456789"]);
}

#[test]
fn window_length_is_configurable() {
    let options = TallyOptions {
        window_seconds: 3600,
        ..TallyOptions::default()
    };
    let tally = tally_lines(FlowFormat::default(), options, &[REJECT]);
    assert_eq!(tally.by_rejects()[0].key.window_start, 1_418_529_600);
}

#[test]
fn same_source_in_two_windows_is_two_aggregates_and_one_source() {
    let later = REJECT.replace("1418530010 1418530070", "1418530400 1418530460");
    let tally = tally_default(&[REJECT, &later, REJECT]);
    let ranked = tally.by_rejects();
    assert_eq!(ranked.len(), 2);
    assert_eq!(ranked[0].rejects(), 2);
    assert_eq!(tally.totals().sources, 1);
}

#[test]
fn accepts_and_gaps_are_not_counted_as_rejects() {
    let tally = tally_default(&[ACCEPT, NODATA, SKIPDATA]);
    assert!(tally.is_empty());
    assert_eq!(tally.totals().rejects, 0);
}

#[test]
fn nodata_and_skipdata_are_counted_per_interface_and_window() {
    let tally = tally_default(&[NODATA, SKIPDATA, SKIPDATA]);
    assert_eq!(
        tally.capture_gaps(),
        vec![
            (
                "eni-11111111aaaaaaaaa",
                1_431_280_800,
                CaptureGaps {
                    nodata: 0,
                    skipdata: 2
                }
            ),
            (
                "eni-1235b8ca123456789",
                1_431_280_800,
                CaptureGaps {
                    nodata: 1,
                    skipdata: 0
                }
            ),
        ]
    );
}

#[test]
fn nat_gateway_records_without_action_are_uncountable() {
    let format = FlowFormat::from_log_format(
        "${instance-id} ${interface-id} ${srcaddr} ${dstaddr} ${pkt-srcaddr} ${pkt-dstaddr}",
    )
    .unwrap();
    let tally = tally_lines(
        format,
        TallyOptions::default(),
        &["- eni-1235b8ca123456789 10.0.1.5 10.0.0.220 10.0.1.5 203.0.113.5"],
    );
    assert_eq!(tally.totals().uncountable, 1);
    assert_eq!(tally.totals().rejects, 0);
}

#[test]
fn transit_gateway_records_are_uncountable_even_with_an_action_column() {
    let format =
        FlowFormat::from_log_format("${resource-type} ${srcaddr} ${start} ${action}").unwrap();
    let tally = tally_lines(
        format,
        TallyOptions::default(),
        &["TransitGateway 10.0.0.1 1700000000 REJECT"],
    );
    assert_eq!((tally.totals().uncountable, tally.totals().rejects), (1, 0));
}

#[test]
fn reject_without_source_or_time_is_uncountable() {
    let format = FlowFormat::from_log_format("${srcaddr} ${start} ${action}").unwrap();
    let tally = tally_lines(
        format,
        TallyOptions::default(),
        &["- 1700000000 REJECT", "10.0.0.1 - REJECT"],
    );
    assert_eq!((tally.totals().uncountable, tally.totals().rejects), (2, 0));
}

#[test]
fn end_is_used_when_the_format_has_no_start() {
    let format = FlowFormat::from_log_format("${srcaddr} ${end} ${action}").unwrap();
    let tally = tally_lines(
        format,
        TallyOptions::default(),
        &["10.0.0.1 1700000123 REJECT"],
    );
    assert_eq!(tally.by_rejects()[0].key.window_start, 1_700_000_100);
}

#[test]
fn pkt_srcaddr_attribution_uses_the_original_sender() {
    let format =
        FlowFormat::from_log_format("${srcaddr} ${pkt-srcaddr} ${start} ${action}").unwrap();
    let lines = [
        "10.0.1.5 203.0.113.5 1700000000 REJECT",
        "10.0.1.5 - 1700000000 REJECT",
    ];
    let by_pkt = tally_lines(
        format.clone(),
        TallyOptions {
            attribution: SourceAttribution::PktSrcAddr,
            ..TallyOptions::default()
        },
        &lines,
    );
    let sources: Vec<IpAddr> = by_pkt
        .by_rejects()
        .iter()
        .map(|aggregate| aggregate.key.source)
        .collect();
    assert_eq!(sources, vec![ip("10.0.1.5"), ip("203.0.113.5")]);
    let by_src = tally_lines(format, TallyOptions::default(), &lines);
    assert_eq!(by_src.by_rejects()[0].rejects(), 2);
}

#[test]
fn reject_reasons_and_protocols_are_broken_down() {
    let format =
        FlowFormat::from_log_format("${srcaddr} ${protocol} ${start} ${action} ${reject-reason}")
            .unwrap();
    let tally = tally_lines(
        format,
        TallyOptions::default(),
        &[
            "10.0.0.1 6 1700000000 REJECT BPA",
            "10.0.0.1 17 1700000000 REJECT -",
            "10.0.0.1 6 1700000000 REJECT BPA",
        ],
    );
    let stats = tally.by_rejects()[0];
    assert_eq!(stats.reject_reasons(), vec![("BPA", 2)]);
    assert_eq!(stats.protocols(), vec![(6, 2), (17, 1)]);
}

#[test]
fn a_full_port_sweep_is_counted_exactly_in_bounded_memory() {
    let format =
        FlowFormat::from_log_format("${srcaddr} ${dstaddr} ${dstport} ${start} ${action}").unwrap();
    let mut parser = RecordParser::new(format);
    let mut tally = RejectTally::default();
    for round in 0..2 {
        for port in 0..=u16::MAX {
            let line = format!("198.51.100.7 10.0.0.{} {port} 1700000000 REJECT", round + 1);
            tally.add(&parser.parse(&line).unwrap());
        }
    }
    let stats = tally.by_rejects()[0];
    assert_eq!(stats.rejects(), 131_072);
    assert_eq!(stats.distinct_dst_ports(), 65_536);
    assert_eq!(stats.distinct_dst_addrs(), 2);
    assert!(matches!(
        stats.stats().detail.as_deref().map(|d| &d.dst_ports),
        Some(PortSet::Bitmap { .. })
    ));
}

#[test]
fn host_sweeps_are_exact_up_to_the_cap_then_estimated_closely() {
    let format = FlowFormat::from_log_format("${srcaddr} ${dstaddr} ${start} ${action}").unwrap();
    let mut parser = RecordParser::new(format);
    let mut tally = RejectTally::default();
    let mut counts = Vec::new();
    for host in 0u32..50_000 {
        let addr = std::net::Ipv4Addr::from(0x0a00_0000 + host);
        tally.add(
            &parser
                .parse(&format!("203.0.113.9 {addr} 1700000000 REJECT"))
                .unwrap(),
        );
        if host + 1 == EXACT_ADDRESSES as u32 || host + 1 == 50_000 {
            let stats = tally.by_rejects()[0];
            counts.push((stats.distinct_dst_addrs(), stats.dst_addrs_exact()));
        }
    }
    assert_eq!(counts[0], (EXACT_ADDRESSES as u64, true));
    let (estimate, exact) = counts[1];
    assert!(!exact);
    let error = (estimate as f64 - 50_000.0).abs() / 50_000.0;
    assert!(error < 0.05, "estimate {estimate} is {error:.3} off");
}

#[test]
fn a_source_that_keeps_to_two_ports_and_hosts_needs_no_detail() {
    let other_port = REJECT.replace(" 3389 ", " 22 ");
    let other_host = REJECT.replace("172.31.9.12", "172.31.9.13");
    let tally = tally_default(&[REJECT, &other_port, REJECT, &other_host]);
    let stats = tally.by_rejects()[0];
    assert!(stats.stats().detail.is_none());
    assert_eq!(
        (
            stats.rejects(),
            stats.distinct_dst_ports(),
            stats.distinct_dst_addrs()
        ),
        (4, 2, 2)
    );
    assert_eq!(stats.protocols(), vec![(6, 4)]);
    assert_eq!(std::mem::size_of::<Row>(), 64);

    let third_port = REJECT.replace(" 3389 ", " 443 ");
    let tally = tally_default(&[REJECT, &other_port, &third_port]);
    let stats = tally.by_rejects()[0];
    assert!(stats.stats().detail.is_some());
    assert_eq!(stats.dst_ports(), vec![22, 443, 3389]);
    assert_eq!(stats.protocols(), vec![(6, 3)]);
}

#[test]
fn short_texts_are_equal_exactly_when_the_texts_are() {
    let mut texts: Vec<String> = [
        "eni-1235b8ca123456789",
        "eni-1235b8ca123456788",
        "eni-0235b8ca123456789",
        "eni-1235b8cb123456789",
        "abcdefgh",
        "abcdefghi",
        "abcdefgh\0",
        "short",
    ]
    .map(String::from)
    .to_vec();
    for len in 7..=25 {
        texts.push("x".repeat(len));
        texts.push(format!(
            "{}y{}",
            "x".repeat(len / 2),
            "x".repeat(len - len / 2 - 1)
        ));
    }
    for a in &texts {
        for b in &texts {
            let same_key = ShortText::new(a).is_some_and(|key| ShortText::new(b) == Some(key));
            assert_eq!(
                same_key,
                a == b && (8..=24).contains(&a.len()),
                "{a:?} {b:?}"
            );
        }
    }
}

/// Everything the CLI's `tally --json` report is built from (its `report::report`), in
/// its order: tallies that give equal ones report alike.
type Report<'a> = (
    Totals,
    u64,
    Vec<AggregateSummary<'a>>,
    usize,
    Vec<(&'a str, u64, CaptureGaps)>,
    Vec<String>,
);

fn report(tally: &RejectTally) -> Report<'_> {
    let ranking = tally.ranking(None);
    (
        tally.totals(),
        tally.options().window_seconds,
        ranking
            .iter()
            .map(|aggregate| aggregate.summary())
            .collect(),
        ranking.omitted(),
        tally.capture_gaps(),
        tally
            .malformed_samples()
            .iter()
            .map(ToString::to_string)
            .collect(),
    )
}

#[test]
fn reads_see_the_rejects_waiting_in_the_batch() {
    let format = FlowFormat::from_log_format(
        "${interface-id} ${srcaddr} ${dstaddr} ${dstport} ${protocol} ${start} ${action} \
             ${reject-reason}",
    )
    .unwrap();
    let mut parser = RecordParser::new(format);
    let mut tally = RejectTally::default();
    for i in 0..3 * BATCH + 5 {
        let line = format!(
            "eni-{} 10.0.{}.{} 10.1.0.{} {} {} {} REJECT {}",
            i % 4,
            i % 7,
            i % 5,
            i % 3,
            20 + i % 4,
            [6, 17, 1][i % 3],
            1_700_000_000 + 40 * i,
            ["-", "BPA", "-", "OTHER"][i % 4],
        );
        tally.add(&parser.parse(&line).unwrap());
        let mut applied = tally.clone();
        applied.apply_pending();
        assert!(applied.pending.is_empty());
        assert_eq!(report(&tally), report(&applied), "after {} records", i + 1);
        assert_eq!(tally.len(), applied.len());
        let first = applied.by_rejects()[0].key;
        assert_eq!(
            tally.get(&first).map(|aggregate| aggregate.rejects()),
            applied.get(&first).map(|aggregate| aggregate.rejects())
        );
    }
}

#[test]
fn a_summary_gives_what_the_accessors_give_before_and_after_applying() {
    let format = FlowFormat::from_log_format(
        "${interface-id} ${srcaddr} ${dstaddr} ${dstport} ${protocol} ${start} ${action} \
             ${reject-reason}",
    )
    .unwrap();
    let mut parser = RecordParser::new(format);
    let mut tally = RejectTally::default();
    for i in 0..2 * BATCH + 9 {
        let line = format!(
            "eni-{} 10.0.{}.{} 10.1.{}.{} {} {} {} REJECT {}",
            i % 5,
            i % 3,
            i % 4,
            i % 7,
            i % 6,
            20 + i % 5,
            [6, 17, 1, 58, 47, 50, 132][i % 7],
            1_700_000_000 + 3 * i,
            ["-", "BPA", "-", "OTHER", "-"][i % 5],
        );
        tally.add(&parser.parse(&line).unwrap());
    }
    assert!(!tally.pending.is_empty());
    let spilled = tally.aggregates().filter(|a| a.stats().detail.is_some());
    assert!((1..tally.len()).contains(&spilled.count()));
    let most_protocols = tally.aggregates().map(|a| a.protocols().len()).max();
    assert!(most_protocols > Some(INLINE_PROTOCOLS));
    let mut applied = tally.clone();
    applied.apply_pending();
    for tally in [&tally, &applied] {
        for aggregate in tally.aggregates() {
            let expected = AggregateSummary {
                key: aggregate.key,
                rejects: aggregate.rejects(),
                packets: aggregate.packets(),
                bytes: aggregate.bytes(),
                first_seen: aggregate.first_seen(),
                last_seen: aggregate.last_seen(),
                distinct_dst_ports: aggregate.distinct_dst_ports(),
                distinct_dst_addrs: aggregate.distinct_dst_addrs(),
                dst_addrs_exact: aggregate.dst_addrs_exact(),
                protocols: aggregate.protocols().into_iter().collect(),
                reject_reasons: aggregate.reject_reasons(),
                interfaces: aggregate.sample_interfaces().into_iter().collect(),
            };
            assert_eq!(aggregate.summary(), expected);
        }
    }
    let summaries = |tally: &RejectTally| -> Vec<String> {
        let summaries = tally.aggregates().map(|aggregate| aggregate.summary());
        summaries.map(|summary| format!("{summary:?}")).collect()
    };
    assert_eq!(summaries(&tally), summaries(&applied));
}

#[test]
fn spreading_out_keeps_what_was_counted_inline() {
    let other_port = REJECT.replace(" 3389 ", " 22 ");
    let other_protocol = ICMP_REJECT.replace("172.31.16.139", "172.31.9.69");
    let tally = tally_default(&[REJECT, REJECT, &other_port, &other_protocol]);
    let stats = tally.get(&SourceWindow {
        source: ip("172.31.9.69"),
        window_start: 1_418_529_900,
    });
    let stats = stats.expect("REJECT's window");
    assert_eq!(stats.dst_ports(), vec![22, 3389]);
    assert_eq!(stats.protocols(), vec![(6, 3)]);
    assert_eq!(stats.distinct_dst_addrs(), 1);
    let icmp = tally.get(&SourceWindow {
        source: ip("172.31.9.69"),
        window_start: 1_432_917_000,
    });
    assert_eq!(icmp.expect("ICMP's window").protocols(), vec![(1, 1)]);
}

#[test]
fn absurd_times_are_uncountable_not_wrapped() {
    let format = FlowFormat::from_log_format("${srcaddr} ${start} ${action}").unwrap();
    let tally = tally_lines(
        format,
        TallyOptions::default(),
        &[
            "10.0.0.1 99999999999 REJECT",
            "10.0.0.1 99999999999999999 REJECT",
        ],
    );
    assert_eq!(tally.totals().rejects, 1);
    assert_eq!(tally.totals().uncountable, 1);
}

#[test]
fn ipv6_destinations_past_the_interning_cap_keep_memory_bounded() {
    // One source sweeping IPv6 space: destinations past the cap are kept as
    // fingerprints in the source's bounded detail, not interned.
    let format = FlowFormat::from_log_format("${srcaddr} ${dstaddr} ${start} ${action}").unwrap();
    let mut parser = RecordParser::new(format);
    let mut tally = RejectTally::default();
    let sweep = V6_DESTINATION_IDS as u128 + 20_000;
    for host in 0..sweep {
        let destination = Ipv6Addr::from_bits(0x2001_0db8 << 96 | host);
        let line = format!("2001:db8::5 {destination} 1700000000 REJECT");
        tally.add(&parser.parse(&line).unwrap());
    }
    // A source with two of the interned destinations still needs no detail.
    for host in [1, 2] {
        let destination = Ipv6Addr::from_bits(0x2001_0db8 << 96 | host);
        let line = format!("2001:db8::6 {destination} 1700000000 REJECT");
        tally.add(&parser.parse(&line).unwrap());
    }
    assert_eq!(tally.v6_destinations.len(), V6_DESTINATION_IDS);
    let ranked = tally.by_rejects();
    let estimate = ranked[0].distinct_dst_addrs() as f64;
    let truth = sweep as f64;
    assert!(
        (estimate - truth).abs() / truth < 0.05,
        "{estimate} vs {truth}"
    );
    assert!(ranked[1].stats().detail.is_none());
    assert_eq!(ranked[1].distinct_dst_addrs(), 2);
    assert_eq!(
        ranked[1].dst_host_examples(2),
        [1, 2]
            .map(|host| {
                address_fingerprint(IpAddr::V6(Ipv6Addr::from_bits(0x2001_0db8 << 96 | host)))
            })
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
}

#[test]
fn interface_samples_stop_at_the_limit() {
    let lines: Vec<String> = (0..5)
        .map(|i| REJECT.replace("eni-1235b8ca123456789", &format!("eni-{i}")))
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let tally = tally_default(&refs);
    let stats = tally.by_rejects()[0];
    assert_eq!(stats.sample_interfaces(), vec!["eni-0", "eni-1", "eni-2"]);
}

#[test]
fn malformed_lines_are_all_counted_and_the_first_kept() {
    let mut tally = RejectTally::default();
    for line_number in 1..=25 {
        tally.add_malformed(MalformedLine {
            line_number,
            error: ParseError::NotUtf8,
        });
    }
    assert_eq!(tally.totals().malformed, 25);
    assert_eq!(tally.malformed_samples().len(), MALFORMED_SAMPLES);
    assert_eq!(tally.malformed_samples()[0].line_number, 1);
}

#[test]
fn ranking_is_by_rejects_then_address() {
    let other = REJECT.replace("172.31.9.69", "172.31.9.1");
    let tally = tally_default(&[REJECT, &other, &other]);
    let sources: Vec<IpAddr> = tally
        .by_rejects()
        .iter()
        .map(|aggregate| aggregate.key.source)
        .collect();
    assert_eq!(sources, vec![ip("172.31.9.1"), ip("172.31.9.69")]);
}

#[test]
fn ranking_is_the_by_rejects_order_cut_to_the_limit() {
    // IPv6 sources first seen out of address order, ties in REJECT counts, several
    // windows, and rows only the waiting batch has.
    let sources = [
        "2001:db8::9",
        "10.0.0.2",
        "2001:db8::1",
        "fe80::1",
        "10.0.0.1",
        "2001:db8::5",
        "192.0.2.7",
    ];
    let format = FlowFormat::from_log_format("${srcaddr} ${start} ${action}").unwrap();
    let mut parser = RecordParser::new(format);
    let mut tally = RejectTally::default();
    let mut n_records = 0;
    for round in 0..40 {
        for (index, source) in sources.iter().enumerate() {
            if (round * 7 + index * 3) % 5 < 2 {
                let time = 1_700_000_000 + 300 * ((round + index) % 4);
                tally.add(&parser.parse(&format!("{source} {time} REJECT")).unwrap());
                n_records += 1;
            }
        }
    }
    for late in [
        "2001:db8::3 1700000000 REJECT",
        "10.0.0.3 1700003000 REJECT",
    ] {
        tally.add(&parser.parse(late).unwrap());
        n_records += 1;
    }
    assert_eq!(tally.pending_only_keys().count(), 2, "{n_records} records");
    let mut expected: Vec<SourceAggregate<'_>> = tally.aggregates().collect();
    expected.sort_by(|a, b| b.rejects().cmp(&a.rejects()).then(a.key.cmp(&b.key)));
    let tied = |alike: fn(&SourceWindow, &SourceWindow) -> bool| {
        let mut pairs = expected.windows(2);
        pairs
            .any(|pair| pair[0].rejects() == pair[1].rejects() && alike(&pair[0].key, &pair[1].key))
    };
    assert!(tied(|a, b| a.source.is_ipv6() && b.source.is_ipv6()));
    assert!(tied(|a, b| a.source.is_ipv4() && b.source.is_ipv4()));
    assert!(tied(|a, b| a.source.is_ipv4() && b.source.is_ipv6()));
    assert!(tied(|a, b| a.source == b.source));
    let expected: Vec<SourceWindow> = expected.iter().map(|a| a.key).collect();
    for limit in [
        None,
        Some(0),
        Some(1),
        Some(5),
        Some(expected.len()),
        Some(99),
    ] {
        let ranking = tally.ranking(limit);
        let shown = limit.unwrap_or(expected.len()).min(expected.len());
        let keys: Vec<SourceWindow> = ranking.iter().map(|a| a.key).collect();
        assert_eq!(keys, expected[..shown], "limit {limit:?}");
        assert_eq!(ranking.omitted(), expected.len() - shown);
    }
    let ranked = |tally: &RejectTally| -> Vec<(SourceWindow, u64)> {
        let ranking = tally.ranking(None);
        ranking.iter().map(|a| (a.key, a.rejects())).collect()
    };
    let mut applied = tally.clone();
    applied.apply_pending();
    assert_eq!(ranked(&tally), ranked(&applied));
}
