//! A labelled scenario suite: scans a detector must catch and benign look-alikes it must
//! leave alone, each planted by its own source in generated background traffic, as the
//! deliveries (S3 objects and CloudWatch Logs batches) that carry them and with the outcome
//! the suite expects. Pure: lines and times only; running them through ingest and the
//! evaluator is the caller's (see `tests/src/scenarios.rs`).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use crate::generate::{FlowLogGenerator, GeneratorConfig};
use rejectwatch_core::sketch::DistinctSketch;

/// The first window's start (window-aligned for 5-minute windows).
pub const START: u64 = 1_714_521_600;
/// Window length the scenarios are laid out in.
pub const WINDOW_SECONDS: u64 = 300;
/// Windows of traffic.
pub const WINDOWS: u64 = 6;
/// The settings the expectations assume, as `NAME=value` for ingest and the evaluator.
pub const SETTINGS: [(&str, &str); 8] = [
    ("REJECT_THRESHOLD", "100"),
    ("PORT_SCAN_THRESHOLD", "20"),
    ("HOST_SWEEP_THRESHOLD", "20"),
    ("SCAN_SPAN_MINUTES", "15"),
    ("WINDOW_MINUTES", "5"),
    ("VPC_CIDRS", "10.0.0.0/16"),
    ("INTERNAL_SOURCES", "report"),
    ("IGNORED_DST_PORTS", "8081"),
];

/// How a delivery reaches ingest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// An S3 object (plain text here; ingest reads gzip and plain alike).
    S3,
    /// A CloudWatch Logs subscription batch.
    CloudWatch,
}

/// Flow-log lines (default format) delivered together.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub path: Path,
    /// Names the object or batch; unique in the suite.
    pub name: String,
    /// Unix seconds when AWS delivers it.
    pub arrives: u64,
    pub lines: Vec<String>,
}

/// What the evaluator should do about a scenario's source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Alert it, for these rules (names as in the digest).
    Alert(Vec<&'static str>),
    /// List it apart as internal (inside `VPC_CIDRS`), not among the outside sources.
    Internal,
    /// Never name it.
    Silent,
}

/// One planted behaviour.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    /// What it plants, in a few words.
    pub plants: &'static str,
    pub source: IpAddr,
    pub expect: Outcome,
    /// Why that outcome is right.
    pub why: &'static str,
    pub deliveries: Vec<Delivery>,
}

/// One flow-log record, rejected.
struct Reject {
    interface: u32,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    start: u64,
}

impl Reject {
    fn line(&self) -> String {
        let mut line = String::new();
        let _ = write!(
            line,
            "2 123456789012 eni-0c5e0a{:011x} {} {} {} {} 6 1 44 {} {} REJECT OK",
            self.interface,
            self.src,
            self.dst,
            self.src_port,
            self.dst_port,
            self.start,
            self.start + 1
        );
        line
    }
}

fn vpc_host(index: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        0,
        100 + (index / 250) as u8,
        (index % 250) as u8 + 4,
    ))
}

fn outside(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(100, 64, 0, last))
}

fn window(index: u64) -> u64 {
    START + index * WINDOW_SECONDS
}

/// An S3 object delivered five minutes after its window ends, as AWS's 5-minute
/// aggregation and delivery commonly do.
fn object(name: String, window_index: u64, rejects: &[Reject]) -> Delivery {
    Delivery {
        path: Path::S3,
        name,
        arrives: window(window_index + 1) + WINDOW_SECONDS,
        lines: rejects.iter().map(Reject::line).collect(),
    }
}

/// A CloudWatch Logs batch delivered a minute after its window ends.
fn batch(name: String, window_index: u64, rejects: &[Reject]) -> Delivery {
    Delivery {
        path: Path::CloudWatch,
        name,
        arrives: window(window_index + 1) + 60,
        lines: rejects.iter().map(Reject::line).collect(),
    }
}

/// Every scenario, in a fixed order.
pub fn scenarios() -> Vec<Scenario> {
    let target = vpc_host(0);
    let mut all = Vec::new();

    let source = outside(1);
    let fast: Vec<Reject> = (1..=200)
        .map(|port| Reject {
            interface: 1,
            src: source,
            dst: target,
            src_port: 50_000,
            dst_port: port,
            start: window(1) + 100 + u64::from(port) / 4,
        })
        .collect();
    all.push(Scenario {
        name: "fast-port-scan",
        plants: "200 ports of one host in 50 s",
        source,
        expect: Outcome::Alert(vec!["port-scan"]),
        why: "200 distinct ports in one window, 20 needed",
        deliveries: vec![object("fast-port-scan".into(), 1, &fast)],
    });

    let source = outside(2);
    let edge = window(3);
    let straddle = |part: u64| -> Vec<Reject> {
        (0..15u16)
            .map(|i| Reject {
                interface: 1,
                src: source,
                dst: target,
                src_port: 50_001,
                dst_port: 1_000 + part as u16 * 15 + i,
                start: edge - 30 + part * 30 + u64::from(i) * 2,
            })
            .collect()
    };
    all.push(Scenario {
        name: "window-edge-scan",
        plants: "30 ports in 60 s, 15 each side of a window edge",
        source,
        expect: Outcome::Alert(vec!["port-scan"]),
        why: "15 + 15 ports: no window reaches 20, the span does",
        deliveries: vec![
            object("window-edge-scan-1".into(), 2, &straddle(0)),
            object("window-edge-scan-2".into(), 3, &straddle(1)),
        ],
    });

    let source = outside(3);
    let slow = (0..WINDOWS)
        .map(|w| {
            let rejects: Vec<Reject> = (0..19u16)
                .map(|i| Reject {
                    interface: 1,
                    src: source,
                    dst: target,
                    src_port: 50_002,
                    dst_port: 3_000 + w as u16 * 19 + i,
                    start: window(w) + 10 + u64::from(i) * 15,
                })
                .collect();
            object(format!("slow-scan-{w}"), w, &rejects)
        })
        .collect();
    all.push(Scenario {
        name: "slow-scan",
        plants: "19 new ports every 5 minutes for 30 minutes",
        source,
        expect: Outcome::Alert(vec!["port-scan"]),
        why: "19 per window, under 20; 57 over a 15-minute span",
        deliveries: slow,
    });

    let source = outside(4);
    let sweep: Vec<Delivery> = (0..4u32)
        .map(|part| {
            let rejects: Vec<Reject> = (0..10u32)
                .map(|i| Reject {
                    interface: 100 + part * 10 + i,
                    src: source,
                    dst: vpc_host(100 + part * 10 + i),
                    src_port: 50_003,
                    dst_port: 22,
                    start: window(2) + 20 + u64::from(part * 10 + i) * 5,
                })
                .collect();
            object(format!("host-sweep-{part}"), 2, &rejects)
        })
        .collect();
    all.push(Scenario {
        name: "host-sweep-across-enis-and-objects",
        plants: "40 hosts, each its own ENI, in 4 S3 objects of one window",
        source,
        expect: Outcome::Alert(vec!["host-sweep"]),
        why: "10 hosts per object; the row adds the 4 objects up to 40",
        deliveries: sweep,
    });

    let source = outside(5);
    let split = |interface: u32, dst: IpAddr, first: u16| -> Vec<Reject> {
        (0..12u16)
            .map(|i| Reject {
                interface,
                src: source,
                dst,
                src_port: 50_004,
                dst_port: first + i,
                start: window(2) + 60 + u64::from(i) * 3,
            })
            .collect()
    };
    all.push(Scenario {
        name: "scan-split-cloudwatch-and-s3",
        plants: "24 ports: 12 via CloudWatch Logs on one ENI, 12 via S3 on another",
        source,
        expect: Outcome::Alert(vec!["port-scan"]),
        why: "both paths add to one (source, window) row: 24 ports",
        deliveries: vec![
            batch(
                "split-cloudwatch".into(),
                2,
                &split(200, vpc_host(200), 2_000),
            ),
            object("split-s3".into(), 2, &split(201, vpc_host(201), 2_012)),
        ],
    });

    // At exactly the thresholds, with values the 1,024-register sketch alone counts as 19.
    let collides = |values: &[u64]| {
        DistinctSketch::from_values(values.iter().copied()).estimate() != values.len() as u64
    };
    let first_port = (1_000..60_000u16)
        .find(|&first| collides(&(first..first + 20).map(u64::from).collect::<Vec<_>>()))
        .unwrap_or(1_000);
    let source = outside(10);
    let at_threshold: Vec<Reject> = (0..20u16)
        .map(|i| Reject {
            interface: 1,
            src: source,
            dst: target,
            src_port: 50_010,
            dst_port: first_port + i,
            start: window(3) + 40 + u64::from(i) * 4,
        })
        .collect();
    all.push(Scenario {
        name: "port-scan-at-the-threshold",
        plants: "20 ports of one host in one window, a range the sketch alone counts 19",
        source,
        expect: Outcome::Alert(vec!["port-scan"]),
        why: "exactly 20 ports: counted exactly, so it crosses",
        deliveries: vec![object(
            "port-scan-at-the-threshold".into(),
            3,
            &at_threshold,
        )],
    });
    let fingerprint = |index: u32| match vpc_host(index) {
        IpAddr::V4(v4) => u64::from(v4.to_bits()),
        IpAddr::V6(_) => 0,
    };
    let first_host = (400..4_000u32)
        .find(|&first| collides(&(first..first + 20).map(fingerprint).collect::<Vec<_>>()))
        .unwrap_or(400);
    let source = outside(11);
    let sweep_at_threshold: Vec<Reject> = (0..20u32)
        .map(|i| Reject {
            interface: first_host + i,
            src: source,
            dst: vpc_host(first_host + i),
            src_port: 50_011,
            dst_port: 3389,
            start: window(4) + 40 + u64::from(i) * 4,
        })
        .collect();
    all.push(Scenario {
        name: "host-sweep-at-the-threshold",
        plants: "20 hosts in one window, addresses the sketch alone counts 19",
        source,
        expect: Outcome::Alert(vec!["host-sweep"]),
        why: "exactly 20 hosts: counted exactly, so it crosses",
        deliveries: vec![object(
            "host-sweep-at-the-threshold".into(),
            4,
            &sweep_at_threshold,
        )],
    });

    let source = outside(6);
    let teardown = (0..WINDOWS)
        .map(|w| {
            let rejects: Vec<Reject> = (0..80u16)
                .map(|i| Reject {
                    interface: 2,
                    src: source,
                    dst: vpc_host(2),
                    src_port: 32_768 + (w as u16 * 80 + i) * 7,
                    dst_port: 443,
                    start: window(w) + u64::from(i) * 3,
                })
                .collect();
            object(format!("teardown-{w}"), w, &rejects)
        })
        .collect();
    all.push(Scenario {
        name: "busy-client-late-teardown",
        plants: "80 late FIN/RST a window to :443, each from another ephemeral port",
        source,
        expect: Outcome::Silent,
        why: "1 destination port and host; 80 REJECTs a window, under 100",
        deliveries: teardown,
    });

    let source = vpc_host(3);
    let replies = (0..WINDOWS)
        .map(|w| {
            let rejects: Vec<Reject> = (0..40u16)
                .map(|i| Reject {
                    interface: 3,
                    src: source,
                    dst: IpAddr::V4(Ipv4Addr::new(100, 64, 1, 1 + (i % 4) as u8)),
                    src_port: 443,
                    dst_port: 49_152 + w as u16 * 40 + i,
                    start: window(w) + 5 + u64::from(i) * 7,
                })
                .collect();
            batch(format!("nacl-replies-{w}"), w, &rejects)
        })
        .collect();
    all.push(Scenario {
        name: "nacl-dropped-replies",
        plants: "a VPC host's replies from :443 to 40 client ephemeral ports a window, dropped by a NACL",
        source,
        expect: Outcome::Internal,
        why: "looks like a port scan, but the source is inside VPC_CIDRS: listed apart, marked internal",
        deliveries: replies,
    });

    let source = outside(8);
    let checks = (0..WINDOWS)
        .map(|w| {
            let rejects: Vec<Reject> = (0..150u32)
                .map(|i| Reject {
                    interface: 300 + i % 30,
                    src: source,
                    dst: vpc_host(300 + i % 30),
                    src_port: 40_000 + i as u16,
                    dst_port: 8081,
                    start: window(w) + u64::from(i) * 2,
                })
                .collect();
            object(format!("health-checks-{w}"), w, &rejects)
        })
        .collect();
    all.push(Scenario {
        name: "health-checks-on-an-ignored-port",
        plants: "150 REJECTs a window to :8081 of 30 targets",
        source,
        expect: Outcome::Silent,
        why: "8081 is in IGNORED_DST_PORTS: not counted (else volume and host-sweep)",
        deliveries: checks,
    });

    let source = outside(9);
    let under: Vec<Reject> = (0..99u32)
        .map(|i| Reject {
            interface: 4 + i % 19,
            src: source,
            dst: vpc_host(4 + i % 19),
            src_port: 50_009,
            dst_port: 5_000 + (i % 19) as u16,
            start: window(2) + u64::from(i) * 3,
        })
        .collect();
    all.push(Scenario {
        name: "one-under-each-threshold",
        plants: "99 REJECTs, 19 ports, 19 hosts in one window",
        source,
        expect: Outcome::Silent,
        why: "one under 100, 20 and 20 (the threshold scenarios above are the other side)",
        deliveries: vec![object("one-under".into(), 2, &under)],
    });

    all
}

/// Ordinary traffic without planted scanners (the generator's realistic mix), one S3 object
/// per window and, for the first window, a CloudWatch Logs batch as well.
pub fn background(seed: u64, records_per_window: u64) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    for w in 0..WINDOWS {
        let mut generator = FlowLogGenerator::new(GeneratorConfig {
            seed: seed + w,
            records: records_per_window,
            start_time: window(w),
            duration_seconds: WINDOW_SECONDS - 10,
            port_scanners: 0,
            host_sweepers: 0,
            ..GeneratorConfig::default()
        });
        let mut lines = Vec::new();
        let mut line = String::new();
        while generator.next_line(&mut line) {
            lines.push(line.clone());
        }
        let split = if w == 0 { lines.len() / 2 } else { 0 };
        let cloudwatch = lines.drain(..split).collect::<Vec<_>>();
        if !cloudwatch.is_empty() {
            deliveries.push(Delivery {
                path: Path::CloudWatch,
                name: format!("background-cloudwatch-{w}"),
                arrives: window(w + 1) + 60,
                lines: cloudwatch,
            });
        }
        deliveries.push(Delivery {
            path: Path::S3,
            name: format!("background-{w}"),
            arrives: window(w + 1) + WINDOW_SECONDS,
            lines,
        });
    }
    deliveries
}

/// The flow log of one scenario in its background, ordered by start time: what
/// `rejectwatch generate --scenario NAME` writes.
pub fn scenario_log(name: &str, seed: u64, records_per_window: u64) -> Option<Vec<String>> {
    let scenario = scenarios().into_iter().find(|s| s.name == name)?;
    let mut lines: Vec<(u64, String)> = background(seed, records_per_window)
        .into_iter()
        .chain(scenario.deliveries)
        .flat_map(|delivery| delivery.lines)
        .map(|line| (start_of(&line), line))
        .collect();
    lines.sort_by_key(|(start, _)| *start);
    Some(lines.into_iter().map(|(_, line)| line).collect())
}

/// The `start` field of a default-format line (the 11th).
fn start_of(line: &str) -> u64 {
    line.split(' ')
        .nth(10)
        .and_then(|start| start.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_its_own_source_and_unique_delivery_names() {
        let all = scenarios();
        let mut sources: Vec<IpAddr> = all.iter().map(|s| s.source).collect();
        sources.sort();
        sources.dedup();
        assert_eq!(sources.len(), all.len());
        let mut names: Vec<&str> = all
            .iter()
            .flat_map(|s| s.deliveries.iter().map(|d| d.name.as_str()))
            .collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
        for scenario in &all {
            for delivery in &scenario.deliveries {
                for line in &delivery.lines {
                    assert!(line.contains(&format!(" {} ", scenario.source)), "{line}");
                    assert!(start_of(line) >= START, "{line}");
                }
            }
        }
    }

    #[test]
    fn the_threshold_scenarios_are_ones_the_sketch_alone_gets_wrong() {
        for name in ["port-scan-at-the-threshold", "host-sweep-at-the-threshold"] {
            let scenario = scenarios().into_iter().find(|s| s.name == name).unwrap();
            let lines = &scenario.deliveries[0].lines;
            let values: Vec<u64> = lines
                .iter()
                .map(|line| {
                    let fields: Vec<&str> = line.split(' ').collect();
                    if name.starts_with("port") {
                        fields[6].parse().unwrap()
                    } else {
                        let address: Ipv4Addr = fields[4].parse().unwrap();
                        u64::from(address.to_bits())
                    }
                })
                .collect();
            assert_eq!(values.len(), 20);
            assert_eq!(DistinctSketch::from_values(values).estimate(), 19, "{name}");
        }
    }

    #[test]
    fn a_scenario_log_is_its_lines_in_the_background_by_start_time() {
        let log = scenario_log("window-edge-scan", 1, 200).unwrap();
        assert_eq!(log.len(), 200 * WINDOWS as usize + 30);
        assert!(
            log.windows(2)
                .all(|pair| start_of(&pair[0]) <= start_of(&pair[1]))
        );
        assert!(scenario_log("no-such-scenario", 1, 10).is_none());
    }
}
