//! The `tally --json` document as plain serialisable types ([`TallyReport`], built by
//! [`report`]): the reference that `output`'s streamed writer, which `tally --json` uses, is
//! tested against byte for byte. Only tests build it, so the module is compiled for tests
//! only.

use std::net::IpAddr;

use rejectwatch_core::tally::{ReasonCount, RejectTally, SourceAggregate, Totals};
use serde::Serialize;

/// A serialisable summary of a tally: the `rejectwatch tally --json` document.
#[derive(Clone, Debug, Serialize)]
pub struct TallyReport {
    pub totals: Totals,
    pub window_seconds: u64,
    /// Aggregates, most REJECTs first.
    pub sources: Vec<SourceReport>,
    /// Aggregates left out by a limit.
    pub sources_omitted: u64,
    pub capture_gaps: Vec<CaptureGapReport>,
    /// The first malformed lines, as `line N: reason`.
    pub malformed_samples: Vec<String>,
}

/// One (source, window) aggregate in a [`TallyReport`].
#[derive(Clone, Debug, Serialize)]
pub struct SourceReport {
    pub source: IpAddr,
    pub window_start: u64,
    pub rejects: u64,
    pub packets: u64,
    pub bytes: u64,
    pub distinct_dst_ports: u32,
    pub distinct_dst_addrs: u64,
    pub distinct_dst_addrs_exact: bool,
    pub first_seen: u64,
    pub last_seen: u64,
    pub protocols: Vec<ProtocolCount>,
    pub reject_reasons: Vec<ReasonCount>,
    pub interfaces: Vec<String>,
}

/// REJECT records of one IANA protocol number.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ProtocolCount {
    pub protocol: u8,
    pub rejects: u64,
}

/// NODATA/SKIPDATA counts of one interface in one window.
#[derive(Clone, Debug, Serialize)]
pub struct CaptureGapReport {
    pub interface: String,
    pub window_start: u64,
    pub nodata: u64,
    pub skipdata: u64,
}

impl From<SourceAggregate<'_>> for SourceReport {
    fn from(aggregate: SourceAggregate<'_>) -> Self {
        let summary = aggregate.summary();
        SourceReport {
            source: summary.key.source,
            window_start: summary.key.window_start,
            rejects: summary.rejects,
            packets: summary.packets,
            bytes: summary.bytes,
            distinct_dst_ports: summary.distinct_dst_ports,
            distinct_dst_addrs: summary.distinct_dst_addrs,
            distinct_dst_addrs_exact: summary.dst_addrs_exact,
            first_seen: summary.first_seen,
            last_seen: summary.last_seen,
            protocols: summary
                .protocols
                .iter()
                .map(|&(protocol, rejects)| ProtocolCount { protocol, rejects })
                .collect(),
            reject_reasons: summary
                .reject_reasons
                .into_iter()
                .map(|(reason, rejects)| ReasonCount {
                    reason: reason.to_owned(),
                    rejects,
                })
                .collect(),
            interfaces: summary
                .interfaces
                .iter()
                .map(|&interface| interface.to_owned())
                .collect(),
        }
    }
}

/// The report of `tally`, with at most `limit` sources (all when `None`).
pub fn report(tally: &RejectTally, limit: Option<usize>) -> TallyReport {
    let ranking = tally.ranking(limit);
    TallyReport {
        totals: tally.totals(),
        window_seconds: tally.options().window_seconds,
        sources_omitted: ranking.omitted() as u64,
        sources: ranking.iter().map(SourceReport::from).collect(),
        capture_gaps: tally
            .capture_gaps()
            .into_iter()
            .map(|(interface, window_start, gaps)| CaptureGapReport {
                interface: interface.to_owned(),
                window_start,
                nodata: gaps.nodata,
                skipdata: gaps.skipdata,
            })
            .collect(),
        malformed_samples: tally
            .malformed_samples()
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rejectwatch_core::flow_log::{FlowFormat, RecordParser};
    use rejectwatch_core::tally::TallyOptions;

    const ACCEPT: &str = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK";
    const REJECT: &str = "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK";
    const SKIPDATA: &str =
        "2 123456789010 eni-11111111aaaaaaaaa - - - - - - - 1431280876 1431280934 - SKIPDATA";

    fn tally_default(lines: &[&str]) -> RejectTally {
        let mut parser = RecordParser::new(FlowFormat::default());
        let mut tally = RejectTally::new(TallyOptions::default());
        for line in lines {
            tally.add(&parser.parse(line).unwrap());
        }
        tally
    }

    #[test]
    fn report_serialises_totals_and_sources() {
        let tally = tally_default(&[REJECT, ACCEPT, SKIPDATA]);
        let json = serde_json::to_value(report(&tally, None)).unwrap();
        assert_eq!(json["totals"]["records"], 3);
        assert_eq!(json["totals"]["rejects"], 1);
        assert_eq!(json["totals"]["sources"], 1);
        assert_eq!(json["sources"][0]["source"], "172.31.9.69");
        assert_eq!(json["sources"][0]["window_start"], 1_418_529_900);
        assert_eq!(json["sources"][0]["distinct_dst_ports"], 1);
        assert_eq!(json["capture_gaps"][0]["skipdata"], 1);
        assert_eq!(report(&tally, Some(0)).sources_omitted, 1);
    }
}
