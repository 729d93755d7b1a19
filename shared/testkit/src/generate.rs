//! Seedable synthetic VPC flow logs for tests, benchmarks and the local demo.
//!
//! A heavy-tailed population of internet sources knocks on a VPC's interfaces; a few
//! planted scanners sweep ports or hosts. Records come out as S3 objects (header line,
//! plain or gzip, optionally several gzip members) or CloudWatch Logs subscription
//! payloads, in any [`FlowFormat`]. Alongside, [`Expected`] holds the truth computed from
//! the generated values themselves, never from the parser, so tests can compare the two.
//!
//! Behind the `generator` cargo feature; the same seed and config give the same bytes.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flate2::write::GzEncoder;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use rand_pcg::Pcg64Mcg;
use rejectwatch_core::decode::{LogData, LogEntry, encode_subscription_event};

#[cfg(feature = "parquet")]
use rejectwatch_core::flow_log::FieldKind;
use rejectwatch_core::flow_log::{Column, Field, FlowFormat};
use rejectwatch_core::tally::SourceWindow;

/// A 25-field custom format (v2 to v5 fields), the benchmark's "custom" case.
pub const CUSTOM_25_FIELDS: [Field; 25] = [
    Field::Version,
    Field::VpcId,
    Field::SubnetId,
    Field::InstanceId,
    Field::InterfaceId,
    Field::AccountId,
    Field::Type,
    Field::SrcAddr,
    Field::DstAddr,
    Field::SrcPort,
    Field::DstPort,
    Field::PktSrcAddr,
    Field::PktDstAddr,
    Field::Protocol,
    Field::Bytes,
    Field::Packets,
    Field::Start,
    Field::End,
    Field::Action,
    Field::TcpFlags,
    Field::LogStatus,
    Field::Region,
    Field::AzId,
    Field::FlowDirection,
    Field::TrafficPath,
];

/// What kind of hostile behaviour a planted scanner shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScannerKind {
    /// Many destination ports on one host.
    PortScan,
    /// One port on many hosts.
    HostSweep,
}

/// Shape of the generated traffic. [`GeneratorConfig::default`] is a realistic mix.
#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    pub seed: u64,
    pub records: u64,
    pub format: FlowFormat,
    /// Unix seconds of the first record's `start`.
    pub start_time: u64,
    /// Record start times spread evenly over this many seconds.
    pub duration_seconds: u64,
    /// Share of benign traffic records that are REJECTs (the rest are ACCEPTs).
    pub reject_fraction: f64,
    /// Size of the heavy-tailed (Zipf) population of ordinary sources.
    pub benign_sources: u32,
    /// Zipf exponent of accepted traffic's sources: a few busy clients and a long tail.
    pub accept_zipf_exponent: f64,
    /// Zipf exponent of benign rejected traffic's sources (internet background noise):
    /// flatter, so no benign source rivals a scanner.
    pub reject_zipf_exponent: f64,
    pub port_scanners: u32,
    pub host_sweepers: u32,
    /// Share of traffic records that come from planted scanners.
    pub scanner_fraction: f64,
    /// Share of benign sources and destinations that are IPv6.
    pub ipv6_fraction: f64,
    pub nodata_fraction: f64,
    pub skipdata_fraction: f64,
    /// Interfaces (ENIs) in the VPC, each with one private address.
    pub interfaces: u32,
    /// Window length used for [`Expected::per_source`].
    pub window_seconds: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 1,
            records: 10_000,
            format: FlowFormat::default(),
            start_time: 1_700_000_000,
            duration_seconds: 600,
            reject_fraction: 0.6,
            benign_sources: 20_000,
            accept_zipf_exponent: 1.1,
            reject_zipf_exponent: 0.6,
            port_scanners: 3,
            host_sweepers: 2,
            scanner_fraction: 0.05,
            ipv6_fraction: 0.1,
            nodata_fraction: 0.002,
            skipdata_fraction: 0.0005,
            interfaces: 200,
            window_seconds: rejectwatch_core::tally::DEFAULT_WINDOW_SECONDS,
        }
    }
}

/// The truth about what was generated, computed from the values, not by parsing.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub records: u64,
    pub rejects: u64,
    pub accepts: u64,
    pub nodata: u64,
    pub skipdata: u64,
    /// Records the format cannot count (no `action`, or transit gateway fields).
    pub uncountable: u64,
    pub per_source: HashMap<SourceWindow, ExpectedSource>,
    /// The planted scanners, which a detector should find.
    pub scanners: Vec<(IpAddr, ScannerKind)>,
}

impl Expected {
    /// Distinct sources with at least one counted REJECT.
    pub fn sources(&self) -> u64 {
        let sources: HashSet<IpAddr> = self.per_source.keys().map(|key| key.source).collect();
        sources.len() as u64
    }
}

/// Expected aggregates of one (source, window).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpectedSource {
    pub rejects: u64,
    pub packets: u64,
    pub bytes: u64,
    pub dst_ports: HashSet<u16>,
    pub dst_addrs: HashSet<IpAddr>,
}

/// One generated flow, before it is written in a format.
#[derive(Clone, Debug)]
struct Flow {
    interface: u32,
    status: &'static str,
    srcaddr: IpAddr,
    dstaddr: IpAddr,
    srcport: u16,
    dstport: u16,
    protocol: u8,
    packets: u64,
    bytes: u64,
    start: u64,
    end: u64,
    reject: bool,
    tcp_flags: u8,
    reject_reason: Option<&'static str>,
}

/// Produces flows one at a time; see the module docs.
pub struct FlowLogGenerator {
    config: GeneratorConfig,
    rng: Pcg64Mcg,
    accept_zipf: Zipf<f64>,
    reject_zipf: Zipf<f64>,
    emitted: u64,
    scanner_progress: Vec<u32>,
    expected: Expected,
    countable: bool,
    /// The `version` value records carry.
    version: u8,
}

impl FlowLogGenerator {
    /// A generator for `config`. Zero scanners or sources are allowed.
    pub fn new(config: GeneratorConfig) -> Self {
        let population = f64::from(config.benign_sources.max(1));
        let accept_zipf = zipf(population, config.accept_zipf_exponent);
        let reject_zipf = zipf(population, config.reject_zipf_exponent);
        let mut expected = Expected::default();
        for index in 0..config.port_scanners {
            expected
                .scanners
                .push((scanner_addr(0, index), ScannerKind::PortScan));
        }
        for index in 0..config.host_sweepers {
            expected
                .scanners
                .push((scanner_addr(1, index), ScannerKind::HostSweep));
        }
        let format = &config.format;
        let countable = format.can_count_rejects()
            && format.contains(Field::SrcAddr)
            && (format.contains(Field::Start) || format.contains(Field::End));
        FlowLogGenerator {
            rng: Pcg64Mcg::seed_from_u64(config.seed),
            scanner_progress: vec![0; expected.scanners.len()],
            accept_zipf,
            reject_zipf,
            emitted: 0,
            expected,
            countable,
            version: version_of(&config.format),
            config,
        }
    }

    /// What has been generated so far.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// Consumes the generator, returning the truth about everything it generated.
    pub fn into_expected(self) -> Expected {
        self.expected
    }

    /// Writes the next record (without newline) into `line`; `false` when all are done.
    pub fn next_line(&mut self, line: &mut String) -> bool {
        if self.emitted >= self.config.records {
            return false;
        }
        let flow = self.next_flow();
        self.account(&flow);
        line.clear();
        render(&self.config.format, self.version, &flow, line);
        self.emitted += 1;
        true
    }

    fn next_flow(&mut self) -> Flow {
        let config = &self.config;
        let offset = self.emitted * config.duration_seconds / config.records.max(1);
        let start = config.start_time + offset + self.rng.random_range(0..5);
        let end = start + self.rng.random_range(1..60);
        let roll: f64 = self.rng.random();
        if roll < config.nodata_fraction + config.skipdata_fraction {
            let status = if roll < config.nodata_fraction {
                "NODATA"
            } else {
                "SKIPDATA"
            };
            let interface = self.rng.random_range(0..config.interfaces.max(1));
            return Flow {
                status,
                ..self.blank_flow(interface, start, end)
            };
        }
        if !self.expected.scanners.is_empty() && self.rng.random_bool(config.scanner_fraction) {
            return self.scanner_flow(start, end);
        }
        let reject = self.rng.random_bool(config.reject_fraction);
        let rank = if reject {
            self.reject_zipf.sample(&mut self.rng)
        } else {
            self.accept_zipf.sample(&mut self.rng)
        } as u32;
        // Ordinary sources keep to their own few hosts and services, as real clients and
        // background noise do; only scanners spread out.
        let habit = mix(u64::from(rank));
        let ipv6 = (habit % 1000) as f64 / 1000.0 < config.ipv6_fraction;
        let srcaddr = benign_addr(rank, ipv6);
        let wanders = self.rng.random_bool(0.2);
        let interface = ((habit >> 10).wrapping_add(u64::from(wanders))
            % u64::from(config.interfaces.max(1))) as u32;
        let dstaddr = interface_addr(interface, ipv6);
        let service = ((habit >> 30) + u64::from(self.rng.random_bool(0.1))) % 14;
        let (protocol, dstport) = match service {
            0..=7 => (
                6,
                [22, 23, 80, 443, 445, 3389, 8080, 5432][service as usize],
            ),
            8..=12 => (17, [53, 123, 161, 500, 1900][service as usize - 8]),
            _ => (if ipv6 { 58 } else { 1 }, 0),
        };
        // ICMP records carry port 0 on both sides.
        let srcport = if protocol == 6 || protocol == 17 {
            self.rng.random_range(1024..=u16::MAX)
        } else {
            0
        };
        let packets = self.rng.random_range(1..20);
        Flow {
            interface,
            status: "OK",
            srcaddr,
            dstaddr,
            srcport,
            dstport,
            protocol,
            packets,
            bytes: packets * self.rng.random_range(40..1500),
            start,
            end,
            reject,
            tcp_flags: if protocol == 6 { 2 } else { 0 },
            reject_reason: (reject && self.rng.random_bool(0.05)).then_some("BPA"),
        }
    }

    fn scanner_flow(&mut self, start: u64, end: u64) -> Flow {
        let index = self.rng.random_range(0..self.expected.scanners.len());
        let (srcaddr, kind) = self.expected.scanners[index];
        let step = self.scanner_progress[index];
        self.scanner_progress[index] = step.wrapping_add(1);
        let interfaces = self.config.interfaces.max(1);
        let (interface, dstport) = match kind {
            // Sweeps ports 1..=65535 of one host in order, then starts again.
            ScannerKind::PortScan => (index as u32 % interfaces, (step % 65_535 + 1) as u16),
            ScannerKind::HostSweep => (step % interfaces, 22),
        };
        Flow {
            interface,
            status: "OK",
            srcaddr,
            dstaddr: interface_addr(interface, false),
            srcport: self.rng.random_range(32_768..61_000),
            dstport,
            protocol: 6,
            packets: 1,
            bytes: 44,
            start,
            end,
            reject: true,
            tcp_flags: 2,
            reject_reason: None,
        }
    }

    fn blank_flow(&self, interface: u32, start: u64, end: u64) -> Flow {
        Flow {
            interface,
            status: "OK",
            srcaddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dstaddr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            srcport: 0,
            dstport: 0,
            protocol: 0,
            packets: 0,
            bytes: 0,
            start,
            end,
            reject: false,
            tcp_flags: 0,
            reject_reason: None,
        }
    }

    fn account(&mut self, flow: &Flow) {
        let expected = &mut self.expected;
        expected.records += 1;
        let has_status = self.config.format.contains(Field::LogStatus);
        match flow.status {
            "NODATA" if has_status => return expected.nodata += 1,
            "SKIPDATA" if has_status => return expected.skipdata += 1,
            "OK" => {}
            // Without log-status a gap record is just a record with no action.
            _ => return expected.uncountable += 1,
        }
        if !self.countable {
            expected.uncountable += 1;
            return;
        }
        if !flow.reject {
            expected.accepts += 1;
            return;
        }
        expected.rejects += 1;
        let window = self.config.window_seconds.max(1);
        let time = if self.config.format.contains(Field::Start) {
            flow.start
        } else {
            flow.end
        };
        let key = SourceWindow {
            source: flow.srcaddr,
            window_start: time - time % window,
        };
        let entry = expected.per_source.entry(key).or_default();
        entry.rejects += 1;
        if self.config.format.contains(Field::Packets) {
            entry.packets += flow.packets;
        }
        if self.config.format.contains(Field::Bytes) {
            entry.bytes += flow.bytes;
        }
        if self.config.format.contains(Field::DstPort) {
            entry.dst_ports.insert(flow.dstport);
        }
        if self.config.format.contains(Field::DstAddr) {
            entry.dst_addrs.insert(flow.dstaddr);
        }
    }

    /// Writes every record as an S3 text object: a header line, then one record per line.
    pub fn write_text<W: Write>(&mut self, mut out: W) -> io::Result<()> {
        writeln!(out, "{}", self.config.format.header_line())?;
        let mut line = String::with_capacity(256);
        while self.next_line(&mut line) {
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
        out.flush()
    }

    /// Writes every record as a gzip S3 object, split into `members` concatenated gzip
    /// members (as when objects are joined), the header in the first.
    pub fn write_gzip<W: Write>(&mut self, mut out: W, members: u32) -> io::Result<()> {
        let members = u64::from(members.max(1));
        let per_member = self.config.records.div_ceil(members).max(1);
        let mut line = String::with_capacity(256);
        let mut member = GzEncoder::new(Vec::new(), flate2::Compression::default());
        writeln!(member, "{}", self.config.format.header_line())?;
        let mut in_member = 0;
        while self.next_line(&mut line) {
            line.push('\n');
            member.write_all(line.as_bytes())?;
            in_member += 1;
            if in_member == per_member {
                out.write_all(&member.finish()?)?;
                member = GzEncoder::new(Vec::new(), flate2::Compression::default());
                in_member = 0;
            }
        }
        if in_member > 0 {
            out.write_all(&member.finish()?)?;
        }
        out.flush()
    }

    /// Writes every record as a Parquet object laid out as AWS writes them: one column per
    /// field of the format, named with underscores, INT_32, INT_64 or STRING by the
    /// field's kind, null for `-`, gzip pages, `rows_per_group` rows per row group. The
    /// records are those [`Self::write_text`] writes for the same seed, so the two objects
    /// are twins.
    #[cfg(feature = "parquet")]
    pub fn write_parquet<W: Write + Send>(
        &mut self,
        out: W,
        rows_per_group: usize,
    ) -> io::Result<()> {
        let format = self.config.format.clone();
        let mut line = String::with_capacity(256);
        let lines = std::iter::from_fn(|| self.next_line(&mut line).then(|| line.clone()));
        write_parquet_lines(&format, lines, out, rows_per_group)
    }

    /// Produces every record as CloudWatch Logs subscription payloads (the Lambda event
    /// JSON), `batch_size` log events each, one payload per string.
    pub fn cloudwatch_payloads(&mut self, batch_size: usize, log_group: &str) -> Vec<String> {
        let mut payloads = Vec::new();
        let mut events = Vec::new();
        let mut line = String::new();
        let mut event_id: u64 = 36_000_000_000_000_000;
        while self.next_line(&mut line) {
            event_id += 1;
            let mut event = LogEntry::default();
            event.id = event_id.to_string();
            event.timestamp = (self.config.start_time * 1000) as i64;
            event.message = line.clone();
            events.push(event);
            if events.len() == batch_size.max(1) {
                payloads.push(subscription_payload(log_group, std::mem::take(&mut events)));
            }
        }
        if !events.is_empty() {
            payloads.push(subscription_payload(log_group, events));
        }
        payloads
    }
}

/// A CloudWatch Logs subscription Lambda payload carrying `events` (a `DATA_MESSAGE`).
pub fn subscription_payload(log_group: &str, events: Vec<LogEntry>) -> String {
    // The event types are non-exhaustive, so they are built from their defaults.
    let mut data = LogData::default();
    data.owner = "123456789012".into();
    data.log_group = log_group.into();
    data.log_stream = "eni-0a1b2c3d4e5f60001-all".into();
    data.subscription_filters = vec!["rejectwatch".into()];
    data.message_type = "DATA_MESSAGE".into();
    data.log_events = events;
    String::from_utf8(encode_subscription_event(&data)).unwrap_or_default()
}

fn zipf(population: f64, exponent: f64) -> Zipf<f64> {
    Zipf::new(population, exponent)
        .or_else(|_| Zipf::new(population, 1.0))
        .unwrap_or_else(|_| unreachable!("a population of at least 1 with s = 1 is valid"))
}

/// A fixed 64-bit mix (the splitmix64 finaliser): stable per-source habits from a rank.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Planted scanners come from the documentation ranges, so they stand out in output:
/// port scanners from 198.51.100.0/24, host sweepers from 203.0.113.0/24.
fn scanner_addr(kind: u8, index: u32) -> IpAddr {
    let base = if kind == 0 {
        [198, 51, 100, 0]
    } else {
        [203, 0, 113, 0]
    };
    IpAddr::V4(Ipv4Addr::new(base[0], base[1], base[2], 10 + index as u8))
}

/// A stable, public-looking address for the benign source of a given rank.
fn benign_addr(rank: u32, ipv6: bool) -> IpAddr {
    let mixed = mix(u64::from(rank) ^ 0xADD7);
    if ipv6 {
        let low = (mixed >> 16) as u16;
        return IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xffff,
            0,
            0,
            0,
            (rank >> 16) as u16,
            low ^ rank as u16,
        ));
    }
    let mut octets = ((mixed >> 32) as u32).to_be_bytes();
    // Keep to ordinary unicast space outside private, loopback and documentation ranges.
    octets[0] = 1 + octets[0] % 223;
    if matches!(octets[0], 10 | 127 | 172 | 192 | 198 | 203) {
        octets[0] += 1;
    }
    octets[3] = (rank % 251) as u8 + 1;
    IpAddr::V4(Ipv4Addr::from(octets))
}

/// The private address of interface `index` in the VPC (10.0.0.0/16, 2001:db8:1234:a100::/56).
fn interface_addr(index: u32, ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0x1234,
            0xa100,
            0,
            0,
            0,
            index as u16 + 4,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(
            10,
            0,
            (index / 250) as u8,
            (index % 250) as u8 + 4,
        ))
    }
}

fn render(format: &FlowFormat, version: u8, flow: &Flow, line: &mut String) {
    let gap = flow.status != "OK";
    for (position, column) in format.columns().iter().enumerate() {
        if position > 0 {
            line.push(' ');
        }
        let Column::Known(field) = column else {
            line.push('-');
            continue;
        };
        // Writing into a String cannot fail.
        let _ = render_field(version, *field, flow, gap, line);
    }
}

/// The `version` AWS writes: the highest version among the format's fields.
fn version_of(format: &FlowFormat) -> u8 {
    format
        .columns()
        .iter()
        .filter_map(|column| match column {
            Column::Known(field) => Some(field.version()),
            Column::Unknown(_) => None,
        })
        .max()
        .unwrap_or(2)
}

fn render_field(
    version: u8,
    field: Field,
    flow: &Flow,
    gap: bool,
    line: &mut String,
) -> std::fmt::Result {
    let interface = flow.interface;
    match field {
        Field::Version => write!(line, "{version}")?,
        Field::AccountId => line.push_str("123456789012"),
        Field::InterfaceId => write!(line, "eni-0a1b2c3d4e5f{interface:05x}")?,
        Field::VpcId => line.push_str("vpc-0a1b2c3d4e5f67890"),
        Field::SubnetId => write!(line, "subnet-0a1b2c3d4e5f6{:04x}", interface % 6)?,
        // One interface in ten belongs to no instance (NAT gateways, load balancers).
        Field::InstanceId if interface % 10 == 9 => line.push('-'),
        Field::InstanceId => write!(line, "i-0a1b2c3d4e5f{interface:05x}")?,
        Field::Region => line.push_str("us-east-1"),
        Field::AzId => write!(line, "use1-az{}", interface % 6 + 1)?,
        Field::Start => write!(line, "{}", flow.start)?,
        Field::End => write!(line, "{}", flow.end)?,
        Field::LogStatus => line.push_str(flow.status),
        _ if gap => line.push('-'),
        Field::SrcAddr | Field::PktSrcAddr => write!(line, "{}", flow.srcaddr)?,
        Field::DstAddr | Field::PktDstAddr => write!(line, "{}", flow.dstaddr)?,
        Field::SrcPort => write!(line, "{}", flow.srcport)?,
        Field::DstPort => write!(line, "{}", flow.dstport)?,
        Field::Protocol => write!(line, "{}", flow.protocol)?,
        Field::Packets => write!(line, "{}", flow.packets)?,
        Field::Bytes => write!(line, "{}", flow.bytes)?,
        Field::Action => line.push_str(if flow.reject { "REJECT" } else { "ACCEPT" }),
        Field::TcpFlags => write!(line, "{}", flow.tcp_flags)?,
        Field::Type => line.push_str(if flow.srcaddr.is_ipv6() {
            "IPv6"
        } else {
            "IPv4"
        }),
        Field::FlowDirection => line.push_str("ingress"),
        Field::TrafficPath => line.push('-'),
        Field::RejectReason => line.push_str(flow.reject_reason.unwrap_or("-")),
        Field::PacketsLostNoRoute
        | Field::PacketsLostBlackhole
        | Field::PacketsLostMtuExceeded
        | Field::PacketsLostTtlExpired => line.push('0'),
        Field::ResourceType => line.push_str("TransitGateway"),
        // Identifiers of features this synthetic VPC does not use (ECS, transit gateways,
        // Outposts and Local Zones, AWS service ranges) are absent.
        _ => line.push('-'),
    }
    Ok(())
}

/// Writes records given as text lines of `format` (no header) as a Parquet object laid out
/// as AWS writes them (see [`FlowLogGenerator::write_parquet`]).
#[cfg(feature = "parquet")]
pub fn write_parquet_lines<W: Write + Send>(
    format: &FlowFormat,
    lines: impl IntoIterator<Item = impl AsRef<str>>,
    out: W,
    rows_per_group: usize,
) -> io::Result<()> {
    let mut columns = ParquetColumns::new(format);
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::GZIP(Default::default()))
        .set_max_row_group_row_count(Some(rows_per_group.max(1)))
        .build();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(out, columns.schema.clone(), Some(properties))
            .map_err(io::Error::other)?;
    for line in lines {
        columns.push_line(line.as_ref())?;
        if columns.rows == 8192 {
            writer
                .write(&columns.finish_batch()?)
                .map_err(io::Error::other)?;
        }
    }
    if columns.rows > 0 {
        writer
            .write(&columns.finish_batch()?)
            .map_err(io::Error::other)?;
    }
    writer.close().map_err(io::Error::other)?;
    Ok(())
}

/// Arrow builders for the columns of a format, filled a text line at a time.
#[cfg(feature = "parquet")]
struct ParquetColumns {
    schema: std::sync::Arc<arrow_schema::Schema>,
    builders: Vec<ColumnBuilder>,
    rows: usize,
}

#[cfg(feature = "parquet")]
enum ColumnBuilder {
    Int32(arrow_array::builder::Int32Builder),
    Int64(arrow_array::builder::Int64Builder),
    Text(arrow_array::builder::StringBuilder),
}

#[cfg(feature = "parquet")]
impl ParquetColumns {
    fn new(format: &FlowFormat) -> Self {
        use arrow_array::builder::{Int32Builder, Int64Builder, StringBuilder};
        use arrow_schema::{DataType, Field as ArrowField};
        let mut fields = Vec::new();
        let mut builders = Vec::new();
        for column in format.columns() {
            // AWS's table: INT_32 for these, INT_64 for the other numbers and times,
            // STRING for the rest.
            let int_32 = [
                Field::Version,
                Field::SrcPort,
                Field::DstPort,
                Field::Protocol,
                Field::TcpFlags,
                Field::TrafficPath,
            ];
            let (data_type, builder) = match column {
                Column::Known(field) if int_32.contains(field) => {
                    (DataType::Int32, ColumnBuilder::Int32(Int32Builder::new()))
                }
                Column::Known(field)
                    if matches!(
                        field.kind(),
                        FieldKind::Number { .. } | FieldKind::Timestamp
                    ) =>
                {
                    (DataType::Int64, ColumnBuilder::Int64(Int64Builder::new()))
                }
                _ => (DataType::Utf8, ColumnBuilder::Text(StringBuilder::new())),
            };
            fields.push(ArrowField::new(
                column.name().replace('-', "_"),
                data_type,
                true,
            ));
            builders.push(builder);
        }
        ParquetColumns {
            schema: std::sync::Arc::new(arrow_schema::Schema::new(fields)),
            builders,
            rows: 0,
        }
    }

    /// One record; a line that is not a well-formed record of the format (a value too few
    /// or too many, a number that is not one) is refused, as its Parquet twin could not
    /// be malformed the same way.
    fn push_line(&mut self, line: &str) -> io::Result<()> {
        let bad =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what} in {line:?}"));
        let values: Vec<&str> = line.split_ascii_whitespace().collect();
        if values.len() != self.builders.len() {
            return Err(bad("not one value per column"));
        }
        for (builder, value) in self.builders.iter_mut().zip(values) {
            let value = Some(value).filter(|value| *value != "-");
            let bad = || bad("not a number");
            match builder {
                ColumnBuilder::Int32(column) => {
                    column.append_option(value.map(str::parse).transpose().map_err(|_| bad())?)
                }
                ColumnBuilder::Int64(column) => {
                    column.append_option(value.map(str::parse).transpose().map_err(|_| bad())?)
                }
                ColumnBuilder::Text(column) => column.append_option(value),
            }
        }
        self.rows += 1;
        Ok(())
    }

    fn finish_batch(&mut self) -> io::Result<arrow_array::RecordBatch> {
        let arrays: Vec<arrow_array::ArrayRef> = self
            .builders
            .iter_mut()
            .map(|builder| -> arrow_array::ArrayRef {
                match builder {
                    ColumnBuilder::Int32(column) => std::sync::Arc::new(column.finish()),
                    ColumnBuilder::Int64(column) => std::sync::Arc::new(column.finish()),
                    ColumnBuilder::Text(column) => std::sync::Arc::new(column.finish()),
                }
            })
            .collect();
        self.rows = 0;
        arrow_array::RecordBatch::try_new(self.schema.clone(), arrays).map_err(io::Error::other)
    }
}
