//! Deciding which sources deserve an alert, and writing the alert.
//!
//! Pure: counters, gaps, the policy and the time come in as values; findings and message
//! text come out. The evaluate handler reads the counters, claims alert state and
//! publishes; everything it decides is decided here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::json;

use crate::counters::StoredCounter;
use crate::ports::Claim;
use crate::tally::{ReasonCount, fingerprint_address};
use crate::time::format_utc;

/// A detection rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// REJECT records from one source in one window at or above a threshold.
    Volume,
    /// Distinct destination ports from one source in one window at or above a threshold.
    PortScan,
    /// Distinct destination addresses from one source in one window at or above a threshold.
    HostSweep,
}

impl Rule {
    /// The rule's name in messages and message attributes.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Volume => "volume",
            Rule::PortScan => "port-scan",
            Rule::HostSweep => "host-sweep",
        }
    }
}

/// How far past its threshold a source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// At least the threshold.
    Low = 1,
    /// At least 4x the threshold.
    Medium = 2,
    /// At least 16x the threshold.
    High = 3,
}

impl Severity {
    /// The severity of `value` against `threshold`.
    pub fn of(value: u64, threshold: u64) -> Severity {
        let threshold = threshold.max(1);
        if value >= threshold.saturating_mul(16) {
            Severity::High
        } else if value >= threshold.saturating_mul(4) {
            Severity::Medium
        } else {
            Severity::Low
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    /// The stored level (1-3).
    pub fn level(self) -> u8 {
        self as u8
    }
}

/// What to do with sources inside the VPC's own ranges. AWS logs the protected host itself
/// as the source when a network ACL drops its reply, so such sources are usually victims.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InternalSources {
    /// Never alert on them.
    Exclude,
    /// Alert, but list them apart and mark them internal.
    #[default]
    Report,
    /// Treat them like any other source.
    Include,
}

/// The thresholds and exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertPolicy {
    pub volume_threshold: u64,
    pub port_scan_threshold: u64,
    pub host_sweep_threshold: u64,
    /// The port-scan and host-sweep rules also apply to a source's rows merged over this
    /// many seconds of consecutive windows, so a scan split by a window edge, or spread
    /// thin over several windows, still crosses the threshold. At most one window: per
    /// window only. (Volume is a rate per window: over a span the same count would be a
    /// lower rate, and would flag busy clients rather than scans.)
    pub span_seconds: u64,
    /// Sources never alerted on. (Ignored destination ports are dropped earlier, at
    /// ingest, so that no count includes them.)
    pub allowlist: Vec<IpNet>,
    /// The VPC's own ranges.
    pub internal_ranges: Vec<IpNet>,
    pub internal_sources: InternalSources,
}

impl AlertPolicy {
    /// The fewest REJECTs a row needs to fire any rule on its own: a scan of N ports or
    /// hosts is at least N records.
    pub fn min_rejects(&self) -> u64 {
        self.volume_threshold
            .min(self.port_scan_threshold)
            .min(self.host_sweep_threshold)
            .max(1)
    }

    /// How many windows of `window_seconds` a span covers (at least the span's length).
    pub fn span_windows(&self, window_seconds: u64) -> u64 {
        self.span_seconds.div_ceil(window_seconds.max(1)).max(1)
    }

    /// The fewest REJECTs a row needs to be read: a span of k windows whose distinct
    /// ports or hosts reach a threshold has a window with a k-th of them, each at least
    /// one REJECT. Rows below this are read only for the sources [`incomplete_spans`] names.
    pub fn min_rejects_to_read(&self, window_seconds: u64) -> u64 {
        let scan_threshold = self.port_scan_threshold.min(self.host_sweep_threshold);
        scan_threshold
            .div_ceil(self.span_windows(window_seconds))
            .min(self.min_rejects())
            .max(1)
    }
}

/// Windows within one span whose rows, merged, crossed a rule that no single row of them
/// did: from the start of the first of them to the end of the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

/// A source that crossed at least one rule in the evaluated windows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub source: IpAddr,
    pub rules: Vec<Rule>,
    pub severity: Severity,
    /// REJECTs summed over the windows where a rule fired (alone or in a span).
    pub rejects: u64,
    /// The largest distinct-port count among those windows and spans, and whether it is
    /// exact.
    pub distinct_dst_ports: u64,
    pub distinct_dst_ports_exact: bool,
    pub distinct_dst_hosts: u64,
    pub distinct_dst_hosts_exact: bool,
    /// Starts of the windows where a rule fired, alone or in a span.
    pub windows: Vec<u64>,
    /// The windows that fired a rule over a span when no single evaluated window did (the
    /// most severe such span, then the earliest), when any did.
    pub span: Option<Span>,
    pub first_seen: u64,
    pub last_seen: u64,
    /// Sampled destination ports, ascending (at most 10).
    pub sample_ports: Vec<u16>,
    /// Sampled IPv4 destinations (IPv6 destinations are only counted).
    pub sample_hosts: Vec<IpAddr>,
    /// Interfaces that logged the REJECTs (sanitised ids, at most 3).
    pub interfaces: Vec<String>,
    /// REJECTs per reject reason, such as `BPA` (sanitised names).
    pub reject_reasons: Vec<ReasonCount>,
    /// The source is inside the VPC's own ranges.
    pub internal: bool,
    /// AWS skipped records (SKIPDATA) in one of the windows: the counts are a lower bound.
    pub lower_bound: bool,
}

/// Evaluates rows, every one of them in an evaluated window. See [`evaluate_since`].
pub fn evaluate(
    rows: &[StoredCounter],
    skipped_windows: &[u64],
    policy: &AlertPolicy,
) -> Vec<Finding> {
    evaluate_since(rows, skipped_windows, policy, 0)
}

/// Evaluates the windows starting at or after `first_window`; rows of earlier windows
/// are context, merged into the spans that end in an evaluated window, but never fire
/// on their own (an earlier run evaluated them). `skipped_windows` are the windows where
/// some interface reported SKIPDATA. Findings come most severe first, then most REJECTs,
/// with sources inside the VPC's own ranges after all others.
pub fn evaluate_since(
    rows: &[StoredCounter],
    skipped_windows: &[u64],
    policy: &AlertPolicy,
    first_window: u64,
) -> Vec<Finding> {
    let mut findings: Vec<Finding> = rows_by_source(rows, policy)
        .into_iter()
        .filter_map(|(source, rows)| {
            evaluate_source(source, &rows, skipped_windows, policy, first_window)
        })
        .collect();
    findings.sort_by(|a, b| {
        a.internal
            .cmp(&b.internal)
            .then(b.severity.cmp(&a.severity))
            .then(b.rejects.cmp(&a.rejects))
            .then(a.source.cmp(&b.source))
    });
    findings
}

/// The sources that could cross a threshold over a span ending in an evaluated window
/// (`evaluated`: the first and last window start, of `window_seconds` each) but whose rows
/// in it were not all read (rows under `read_limit` REJECTs are not), with the first and
/// last window to read all of their rows from. Read, their rows make [`evaluate_since`]
/// exact: a window at or above the read limit and others under it can still add up to a
/// threshold.
pub fn incomplete_spans(
    rows: &[StoredCounter],
    policy: &AlertPolicy,
    window_seconds: u64,
    evaluated: (u64, u64),
    read_limit: u64,
) -> Vec<(IpAddr, u64, u64)> {
    let (first_window, last_window) = evaluated;
    let window_seconds = window_seconds.max(1);
    let span_windows = policy.span_windows(window_seconds);
    if span_windows < 2 {
        return Vec::new();
    }
    let span = span_windows * window_seconds;
    let mut incomplete = Vec::new();
    for (source, rows) in rows_by_source(rows, policy) {
        let ends: Vec<u64> = span_ends(&rows, span_windows, window_seconds)
            .into_iter()
            .filter(|end_window| (first_window..=last_window).contains(end_window))
            .collect();
        let could_cross = ends.iter().any(|&end_window| {
            let from = (end_window + window_seconds).saturating_sub(span);
            let inside = &rows[rows_from(&rows, from)..rows_from(&rows, end_window + 1)];
            // Windows, not rows: a source's IPv4-mapped and IPv4 rows share a window.
            let mut windows: Vec<u64> = inside.iter().map(|row| row.window_start).collect();
            windows.dedup();
            let unread = span_windows.saturating_sub(windows.len() as u64);
            if unread == 0 {
                return false;
            }
            // Each unread window holds under `read_limit` REJECTs, and so under as many
            // new ports or hosts.
            let most_unread = unread * read_limit.saturating_sub(1);
            let read = check(inside, policy);
            [
                (read.ports.0, policy.port_scan_threshold),
                (read.hosts.0, policy.host_sweep_threshold),
            ]
            .into_iter()
            .any(|(value, threshold)| {
                threshold > 0 && value < threshold && value + most_unread >= threshold
            })
        });
        if let (true, Some(&first_end), Some(&last_end)) = (could_cross, ends.first(), ends.last())
        {
            let first = (first_end + window_seconds).saturating_sub(span);
            incomplete.push((source, first, last_end));
        }
    }
    incomplete
}

/// The last windows of the spans that hold at least one of `rows` (one source's,
/// ascending): each row's window and the `span_windows - 1` after it, ascending.
fn span_ends(rows: &[&StoredCounter], span_windows: u64, window_seconds: u64) -> Vec<u64> {
    let mut ends: Vec<u64> = rows
        .iter()
        .flat_map(|row| (0..span_windows).map(move |k| row.window_start + k * window_seconds))
        .collect();
    ends.sort_unstable();
    ends.dedup();
    ends
}

/// The position of the first of `rows` (ascending by window) whose window starts at or
/// after `window_start`.
fn rows_from(rows: &[&StoredCounter], window_start: u64) -> usize {
    rows.partition_point(|row| row.window_start < window_start)
}

/// Rows by source, as the rules see them: IPv4-mapped IPv6 sources as IPv4, allowlisted
/// and excluded sources left out, one row per window (ascending).
fn rows_by_source<'a>(
    rows: &'a [StoredCounter],
    policy: &AlertPolicy,
) -> BTreeMap<IpAddr, Vec<&'a StoredCounter>> {
    let mut by_source: BTreeMap<IpAddr, Vec<&StoredCounter>> = BTreeMap::new();
    for row in rows {
        // Rows written before addresses were normalised at parse time may hold an
        // IPv4-mapped IPv6 source: it is the IPv4 source, for the allowlist and the alert.
        let Some(source) = row.source.map(|source| source.to_canonical()) else {
            continue;
        };
        if policy.allowlist.iter().any(|net| net.contains(&source)) {
            continue;
        }
        if is_internal(source, policy) && policy.internal_sources == InternalSources::Exclude {
            continue;
        }
        by_source.entry(source).or_default().push(row);
    }
    for rows in by_source.values_mut() {
        rows.sort_by_key(|row| row.window_start);
    }
    by_source
}

fn is_internal(source: IpAddr, policy: &AlertPolicy) -> bool {
    policy
        .internal_ranges
        .iter()
        .any(|net| net.contains(&source))
}

/// What some rows of one source add up to, against the rules.
struct Check {
    fired: Vec<Rule>,
    severity: Severity,
    ports: (u64, bool),
    hosts: (u64, bool),
}

fn check(rows: &[&StoredCounter], policy: &AlertPolicy) -> Check {
    let (ports, hosts) = match rows {
        [row] => (row.distinct_dst_ports(), row.distinct_dst_hosts()),
        _ => {
            // Rows merge as the store merges deliveries (sketches by the union of their
            // elements, exact values by their union): the span's distinct count is the
            // count of its union, exact while every row's is.
            let mut merged = StoredCounter::default();
            for row in rows {
                merged.merge_destinations(row);
            }
            (merged.distinct_dst_ports(), merged.distinct_dst_hosts())
        }
    };
    // Volume applies per window only (see `AlertPolicy::span_seconds`).
    let rejects = match rows {
        [row] => row.rejects,
        _ => 0,
    };
    let mut fired = Vec::new();
    let mut severity = Severity::Low;
    for (rule, value, threshold) in [
        (Rule::Volume, rejects, policy.volume_threshold),
        (Rule::PortScan, ports.0, policy.port_scan_threshold),
        (Rule::HostSweep, hosts.0, policy.host_sweep_threshold),
    ] {
        if threshold > 0 && value >= threshold {
            fired.push(rule);
            severity = severity.max(Severity::of(value, threshold));
        }
    }
    Check {
        fired,
        severity,
        ports,
        hosts,
    }
}

/// One source's finding, if a rule fires on one of its evaluated windows, or on a span
/// of windows ending in one.
fn evaluate_source(
    source: IpAddr,
    rows: &[&StoredCounter],
    skipped_windows: &[u64],
    policy: &AlertPolicy,
    first_window: u64,
) -> Option<Finding> {
    let alone: Vec<Check> = rows.iter().map(|row| check(&[row], policy)).collect();
    let mut fired: Vec<Rule> = Vec::new();
    let mut severity = Severity::Low;
    let mut contributing = vec![false; rows.len()];
    let mut ports = (0, true);
    let mut hosts = (0, true);
    let mut span: Option<(Severity, Span)> = None;
    let mut take =
        |check: &Check, fired_rules: &[Rule], members: std::ops::RangeInclusive<usize>| {
            for &rule in fired_rules {
                if !fired.contains(&rule) {
                    fired.push(rule);
                }
            }
            severity = severity.max(check.severity);
            for member in members {
                contributing[member] = true;
            }
            if check.ports.0 >= ports.0 {
                ports = check.ports;
            }
            if check.hosts.0 >= hosts.0 {
                hosts = check.hosts;
            }
        };
    for (index, row) in rows.iter().enumerate() {
        if row.window_start >= first_window && !alone[index].fired.is_empty() {
            take(&alone[index], &alone[index].fired, index..=index);
        }
    }
    // Every span ending in an evaluated window that holds two rows or more, including
    // spans ending in a window without a row of the source: a row that fires alone is
    // left out of the spans that hold it, so a shorter span after it may still fire.
    let window_seconds = rows.last().map_or(1, |row| row.window_seconds.max(1));
    let span_windows = policy.span_windows(window_seconds);
    let span_length = span_windows * window_seconds;
    let ends = if span_windows > 1 {
        span_ends(rows, span_windows, window_seconds)
    } else {
        Vec::new()
    };
    for end in ends.into_iter().filter(|&end| end >= first_window) {
        let span_start = (end + window_seconds).saturating_sub(span_length);
        let (first, after) = (rows_from(rows, span_start), rows_from(rows, end + 1));
        if after < first + 2 {
            continue;
        }
        let merged = check(&rows[first..after], policy);
        // Only what no evaluated row of the span fires alone: a window that explains the
        // alert by itself does not drag its neighbours in. A context row (evaluated by an
        // earlier run) that fires alone now crossed after that run, with rows that came
        // late; leaving its rules out would make them unalertable, so the span may fire
        // them (a source alerted before is held by its cooldown).
        let new: Vec<Rule> = merged
            .fired
            .iter()
            .copied()
            .filter(|rule| {
                !(first..after)
                    .any(|i| rows[i].window_start >= first_window && alone[i].fired.contains(rule))
            })
            .collect();
        if new.is_empty() {
            continue;
        }
        take(&merged, &new, first..=after - 1);
        let this_span = Span {
            start: rows[first].window_start,
            end: rows[after - 1].window_start + window_seconds,
        };
        if span.is_none_or(|(kept, _)| merged.severity > kept) {
            span = Some((merged.severity, this_span));
        }
    }
    if fired.is_empty() {
        return None;
    }
    fired.sort();
    let rows: Vec<&StoredCounter> = rows
        .iter()
        .zip(&contributing)
        .filter(|(_, contributes)| **contributes)
        .map(|(row, _)| *row)
        .collect();
    let mut finding = Finding {
        source,
        rules: fired,
        severity,
        rejects: rows.iter().map(|row| row.rejects).sum(),
        distinct_dst_ports: ports.0,
        distinct_dst_ports_exact: ports.1,
        distinct_dst_hosts: hosts.0,
        distinct_dst_hosts_exact: hosts.1,
        windows: rows.iter().map(|row| row.window_start).collect(),
        span: span.map(|(_, span)| span),
        first_seen: u64::MAX,
        last_seen: 0,
        sample_ports: Vec::new(),
        sample_hosts: Vec::new(),
        interfaces: Vec::new(),
        reject_reasons: Vec::new(),
        internal: is_internal(source, policy),
        lower_bound: false,
    };
    finding.windows.dedup();
    for row in rows {
        finding.first_seen = finding
            .first_seen
            .min(row.first_seen().unwrap_or(row.window_start));
        finding.last_seen = finding
            .last_seen
            .max(row.last_seen().unwrap_or(row.window_start));
        finding.lower_bound |= skipped_windows.contains(&row.window_start);
        merge_sample(
            &mut finding.sample_ports,
            row.sample_ports.iter().copied(),
            10,
        );
        merge_sample(
            &mut finding.sample_hosts,
            row.sample_hosts
                .iter()
                .filter_map(|&fp| fingerprint_address(fp))
                .map(IpAddr::V4),
            5,
        );
        merge_sample(
            &mut finding.interfaces,
            row.interfaces.iter().map(|id| sanitise(id, 40)),
            3,
        );
        for (reason, count) in &row.reject_reasons {
            let reason = sanitise(reason, 32);
            match finding
                .reject_reasons
                .iter_mut()
                .find(|known| known.reason == reason)
            {
                Some(known) => known.rejects += count,
                None => finding.reject_reasons.push(ReasonCount {
                    reason,
                    rejects: *count,
                }),
            }
        }
    }
    Some(finding)
}

fn merge_sample<T: Ord>(sample: &mut Vec<T>, more: impl IntoIterator<Item = T>, limit: usize) {
    sample.extend(more);
    sample.sort();
    sample.dedup();
    sample.truncate(limit);
}

/// Text that came from a log line, made safe to print: only letters, digits and `._:-/`
/// survive, anything else becomes `?`, and it is cut to `limit` characters.
pub fn sanitise(text: &str, limit: usize) -> String {
    text.chars()
        .take(limit)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:-/".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// What is known about a source's last alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertState {
    pub level: u8,
    /// The evaluation time of the claim (the scheduled time, unix seconds): cooldowns
    /// count from it.
    pub claimed_at: u64,
    /// Wall-clock time after which an unpublished claim is abandoned: the claiming run's
    /// deadline and a grace. (The evaluation time cannot tell: a retried or delayed run
    /// claims long after its scheduled time, while it is still alive.)
    pub held_until: u64,
    /// Whether its digest was published.
    pub published: bool,
}

/// What a claim on a source's alert comes to, given the source's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimDecision {
    /// The run may alert: never alerted; alerted before the cooldown; alerted at a lower
    /// level; or claimed, not yet published, by this very run (Lambda retries a run with
    /// its request id, and the retry must finish what the first attempt claimed).
    Claim,
    /// A published alert holds the source.
    Cooldown,
    /// Another run claimed it, is within its deadline, and may still publish.
    HeldElsewhere,
    /// Another run claimed it, never confirmed, and is past its deadline: it died, before
    /// or after publishing. The claimer checks that run's digest record
    /// before taking over.
    Abandoned,
}

/// Decides a claim of `source` at `level` (see [`ClaimDecision`]). `held_by_this_run`:
/// the state is an unpublished claim of `claim.run_id`. `activity_end` is when the
/// finding's newest window ends: once a cooldown is over, only activity in a window that
/// ended after it alerts again, not the windows a run still re-reads from before (see
/// [`cooldown_cutoff`]). The DynamoDB adapter writes the same rule as its condition
/// expression, so that concurrent runs agree.
pub fn decide_claim(
    state: Option<AlertState>,
    held_by_this_run: bool,
    level: u8,
    activity_end: u64,
    claim: &Claim,
) -> ClaimDecision {
    match state {
        None => ClaimDecision::Claim,
        // A first claim that was given back restores "no alert yet".
        Some(state) if !state.published && state.level == 0 => ClaimDecision::Claim,
        Some(state) if state.published => {
            let cutoff = cooldown_cutoff(claim.now, activity_end, claim.cooldown_seconds);
            if cutoff.is_some_and(|cutoff| state.claimed_at <= cutoff) || state.level < level {
                ClaimDecision::Claim
            } else {
                ClaimDecision::Cooldown
            }
        }
        Some(_) if held_by_this_run => ClaimDecision::Claim,
        Some(state) if state.held_until <= claim.wall_now => ClaimDecision::Abandoned,
        Some(_) => ClaimDecision::HeldElsewhere,
    }
}

/// The latest `claimed_at` of a published alert whose cooldown no longer holds a finding
/// that evaluated at `now` and whose newest window ended at `activity_end`: the cooldown
/// must have run out both by now and before that window ended. `None` when none does.
pub fn cooldown_cutoff(now: u64, activity_end: u64, cooldown_seconds: u64) -> Option<u64> {
    now.min(activity_end.saturating_sub(1))
        .checked_sub(cooldown_seconds)
}

/// SNS's limit on a whole message, every protocol's body included.
pub const SNS_MESSAGE_LIMIT: usize = 256 * 1024;
/// What a digest may use of the limit; the rest is room for the subject and attributes.
const MESSAGE_BUDGET: usize = 240 * 1024;
/// SNS subjects must stay under 100 characters.
const SUBJECT_LIMIT: usize = 99;

/// A rendered digest: what the publisher sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    /// Identifies the digest: every publish of it (a retried run, SNS's at-least-once
    /// delivery) carries the same id, so subscribers can drop repeats.
    pub digest_id: String,
    /// ASCII, one line, under 100 characters.
    pub subject: String,
    /// For email subscribers.
    pub text: String,
    /// For SQS, Lambda and HTTP(S) subscribers.
    pub json: String,
    /// Message attributes for subscription filter policies.
    pub severity: Severity,
    pub rules: Vec<Rule>,
    pub source_count: u64,
    /// Of those, sources inside the VPC's own ranges.
    pub internal_count: u64,
}

impl Digest {
    /// The `MessageStructure: json` document: the readable text for email, the JSON for
    /// every other protocol (SQS, Lambda, HTTP(S), email-json take `default`). Each body
    /// appears once, so the whole stays within SNS's limit.
    pub fn message_structure(&self) -> String {
        json!({"default": self.json, "email": self.text}).to_string()
    }
}

/// Where the digest came from, for its text.
#[derive(Clone, Debug)]
pub struct DigestContext<'a> {
    /// The digest's id (the evaluation run's id, which Lambda's retries keep).
    pub digest_id: &'a str,
    /// Unix seconds of the evaluation.
    pub evaluated_at: u64,
    /// Starts of the evaluated windows.
    pub windows: &'a [u64],
    pub window_seconds: u64,
    pub table_name: &'a str,
    /// The command that lists the rows of each window above straight from the store,
    /// shown after the `rejectwatch top` ones: the storage adapter's text (its schema is
    /// not the core's to know).
    pub query_hint: &'a str,
    /// Sources listed in full; the rest are totalled.
    pub max_listed: usize,
}

/// Renders a digest of findings (already claimed), most severe first. Listed sources are
/// cut so that both bodies stay within SNS's limit whatever the number of findings.
pub fn render_digest(findings: &[Finding], context: &DigestContext<'_>) -> Option<Digest> {
    let top = findings.first()?;
    let severity = findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Low);
    let mut rules: Vec<Rule> = findings
        .iter()
        .flat_map(|f| f.rules.iter().copied())
        .collect();
    rules.sort();
    rules.dedup();
    let count = findings.len();
    let subject = subject_line(count, severity, top);

    let mut listed = findings.len().min(context.max_listed);
    loop {
        let digest = Digest {
            digest_id: context.digest_id.to_owned(),
            subject: subject.clone(),
            text: render_text(&findings[..listed], findings, context),
            json: render_json(&findings[..listed], findings, context),
            severity,
            rules: rules.clone(),
            source_count: count as u64,
            internal_count: findings.iter().filter(|f| f.internal).count() as u64,
        };
        if digest.message_structure().len() <= MESSAGE_BUDGET || listed == 0 {
            return Some(digest);
        }
        // Halving keeps the number of renders logarithmic in the number of findings.
        listed /= 2;
    }
}

fn subject_line(count: usize, severity: Severity, top: &Finding) -> String {
    let rules: Vec<&str> = top.rules.iter().map(|rule| rule.name()).collect();
    let mut subject = format!(
        "RejectWatch {}: {} source{} - top {} {} ({} REJECTs)",
        severity.name(),
        count,
        if count == 1 { "" } else { "s" },
        top.source,
        rules.join("+"),
        top.rejects
    );
    if subject.len() > SUBJECT_LIMIT {
        subject = format!(
            "RejectWatch {}: {} sources - top {}",
            severity.name(),
            count,
            top.source
        );
    }
    subject.truncate(SUBJECT_LIMIT);
    subject
}

fn window_range(context: &DigestContext<'_>) -> String {
    match (context.windows.iter().min(), context.windows.iter().max()) {
        (Some(first), Some(last)) => format!(
            "{} to {}",
            format_utc(*first),
            format_utc(last + context.window_seconds)
        ),
        _ => "no windows".into(),
    }
}

fn count_text(value: u64, exact: bool) -> String {
    if exact {
        value.to_string()
    } else {
        format!("~{value}")
    }
}

fn render_text(listed: &[Finding], all: &[Finding], context: &DigestContext<'_>) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "RejectWatch found {} source(s) crossing REJECT thresholds",
        all.len()
    );
    let _ = writeln!(
        text,
        "Windows: {} (evaluated {})",
        window_range(context),
        format_utc(context.evaluated_at)
    );
    let _ = writeln!(text);
    for (position, finding) in listed.iter().enumerate() {
        let first_internal = finding.internal && (position == 0 || !listed[position - 1].internal);
        if first_internal {
            // AWS logs a protected host as the source when a network ACL drops its replies,
            // so these are more often victims or misconfigurations than attackers.
            let _ = writeln!(
                text,
                "Inside the VPC's own ranges (often the protected host itself: a network ACL \
                 dropping its replies; see the README):"
            );
        }
        let rules: Vec<&str> = finding.rules.iter().map(|rule| rule.name()).collect();
        let _ = writeln!(
            text,
            "{}. {} [{}] {}{}",
            position + 1,
            finding.source,
            finding.severity.name(),
            rules.join(", "),
            if finding.internal { " (internal)" } else { "" }
        );
        let _ = writeln!(
            text,
            "   {} REJECTs, {} ports, {} hosts, first {} last {}",
            finding.rejects,
            count_text(finding.distinct_dst_ports, finding.distinct_dst_ports_exact),
            count_text(finding.distinct_dst_hosts, finding.distinct_dst_hosts_exact),
            format_utc(finding.first_seen),
            format_utc(finding.last_seen)
        );
        if let Some(span) = finding.span {
            let _ = writeln!(
                text,
                "   over {} minutes, {} to {}: the windows crossed together",
                (span.end - span.start) / 60,
                format_utc(span.start),
                format_utc(span.end)
            );
        }
        if !finding.sample_ports.is_empty() {
            let ports: Vec<String> = finding.sample_ports.iter().map(u16::to_string).collect();
            let _ = writeln!(text, "   ports e.g. {}", ports.join(", "));
        }
        if !finding.interfaces.is_empty() {
            let _ = writeln!(text, "   interfaces {}", finding.interfaces.join(", "));
        }
        if !finding.reject_reasons.is_empty() {
            let reasons: Vec<String> = finding
                .reject_reasons
                .iter()
                .map(|count| format!("{} {}", count.reason, count.rejects))
                .collect();
            let _ = writeln!(text, "   reject reasons {}", reasons.join(", "));
        }
        if finding.lower_bound {
            let _ = writeln!(
                text,
                "   note: AWS skipped records (SKIPDATA) in this window; counts are a lower bound"
            );
        }
    }
    let rest = &all[listed.len()..];
    if !rest.is_empty() {
        let rejects: u64 = rest.iter().map(|f| f.rejects).sum();
        let _ = writeln!(
            text,
            "\n...and {} more source(s) with {} REJECTs in all.",
            rest.len(),
            rejects
        );
    }
    let _ = writeln!(text, "\nList them all, window by window:");
    match context.windows {
        [first, .., last] if context.windows.len() > 3 => {
            let _ = writeln!(
                text,
                "  for w in $(seq {first} {} {last}); do rejectwatch top --table {} --window $w --limit 0; done",
                context.window_seconds, context.table_name
            );
        }
        windows => {
            for window in windows {
                let _ = writeln!(
                    text,
                    "  rejectwatch top --table {} --window {} --limit 0",
                    context.table_name, window
                );
            }
        }
    }
    let _ = writeln!(text, "  or: {}", context.query_hint);
    // Subscribers that act on digests can drop a repeated delivery by this id.
    let _ = writeln!(text, "\nDigest id: {}", context.digest_id);
    text
}

fn render_json(listed: &[Finding], all: &[Finding], context: &DigestContext<'_>) -> String {
    let rest = &all[listed.len()..];
    json!({
        "type": "rejectwatch.alert",
        "version": 1,
        "digest_id": context.digest_id,
        "evaluated_at": context.evaluated_at,
        "windows": context.windows,
        "window_seconds": context.window_seconds,
        "source_count": all.len(),
        "internal_count": all.iter().filter(|f| f.internal).count(),
        "sources": listed,
        "omitted": {"sources": rest.len(), "rejects": rest.iter().map(|f| f.rejects).sum::<u64>()},
        "table": context.table_name,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AlertPolicy {
        AlertPolicy {
            volume_threshold: 100,
            port_scan_threshold: 20,
            host_sweep_threshold: 20,
            span_seconds: 900,
            allowlist: vec![
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8:ffff::/48".parse().unwrap(),
            ],
            internal_ranges: vec!["10.0.0.0/16".parse().unwrap()],
            internal_sources: InternalSources::Report,
        }
    }

    fn row(
        source: &str,
        window: u64,
        rejects: u64,
        ports: impl IntoIterator<Item = u16>,
        hosts: impl IntoIterator<Item = u64>,
    ) -> StoredCounter {
        StoredCounter {
            source: Some(source.parse().unwrap()),
            window_start: window,
            window_seconds: 300,
            rejects,
            first_seen: vec![window + 5],
            last_seen: vec![window + 250],
            interfaces: vec!["eni-0123".into()],
            ..StoredCounter::default()
        }
        .with_destinations(ports, hosts)
    }

    /// Issue 14: the sketch alone stores 10,698 of the 65,516 contiguous 20-port ranges as
    /// 19 ports, so a scanner of one of them was missed every time; so were host sweeps of
    /// 20 addresses that share a register.
    #[test]
    fn a_scan_of_exactly_the_threshold_fires_whatever_the_ports_or_hosts() {
        use crate::sketch::DistinctSketch;
        let collides = |values: &[u64]| {
            DistinctSketch::from_values(values.iter().copied()).estimate() != values.len() as u64
        };
        let first = (1..=65_516u16)
            .find(|&f| collides(&(f..=f + 19).map(u64::from).collect::<Vec<_>>()))
            .unwrap();
        let hosts: Vec<u64> = (0..1_000u64)
            .map(|f| {
                (0..20)
                    .map(|h| 0x0a00_0000 + f * 20 + h)
                    .collect::<Vec<_>>()
            })
            .find(|hosts| collides(hosts))
            .unwrap();
        let rows = [
            row("198.51.100.1", 0, 20, first..=first + 19, [1]),
            row("198.51.100.2", 0, 20, [22], hosts.clone()),
            row("198.51.100.3", 0, 19, first..=first + 18, [1]),
            row("198.51.100.4", 0, 19, [22], hosts[..19].to_vec()),
        ];
        let findings = evaluate(&rows, &[], &policy());
        let fired: Vec<(String, Vec<Rule>, u64, u64)> = findings
            .iter()
            .map(|f| {
                (
                    f.source.to_string(),
                    f.rules.clone(),
                    f.distinct_dst_ports,
                    f.distinct_dst_hosts,
                )
            })
            .collect();
        assert_eq!(
            fired,
            vec![
                ("198.51.100.1".into(), vec![Rule::PortScan], 20, 1),
                ("198.51.100.2".into(), vec![Rule::HostSweep], 1, 20),
            ]
        );
        assert!(
            findings
                .iter()
                .all(|f| f.distinct_dst_ports_exact && f.distinct_dst_hosts_exact)
        );
    }

    #[test]
    fn each_rule_fires_on_its_own() {
        let rows = [
            row("198.51.100.1", 0, 150, [22], [1]),
            row("198.51.100.2", 0, 30, 1..=30, [1]),
            row("198.51.100.3", 0, 30, [22], 1..=30),
            row("198.51.100.4", 0, 10, [22, 23], [1, 2]),
        ];
        let findings = evaluate(&rows, &[], &policy());
        let rules: Vec<(String, Vec<Rule>)> = findings
            .iter()
            .map(|f| (f.source.to_string(), f.rules.clone()))
            .collect();
        assert_eq!(
            rules,
            vec![
                ("198.51.100.1".into(), vec![Rule::Volume]),
                ("198.51.100.2".into(), vec![Rule::PortScan]),
                ("198.51.100.3".into(), vec![Rule::HostSweep]),
            ]
        );
    }

    const S: &str = "198.51.100.7";

    #[test]
    fn a_scan_straddling_a_window_edge_fires_over_the_span() {
        // 30 ports in a minute, 15 on each side of the edge: neither window reaches 20.
        let rows = [row(S, 0, 15, 1..=15, [1]), row(S, 300, 15, 16..=30, [1])];
        let findings = evaluate(&rows, &[], &policy());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].rules, vec![Rule::PortScan]);
        assert_eq!(findings[0].span, Some(Span { start: 0, end: 600 }));
        assert_eq!(findings[0].windows, vec![0, 300]);
        assert_eq!(findings[0].rejects, 30);
        assert!(crate::sketch::within_expected_error(
            findings[0].distinct_dst_ports,
            30
        ));

        let per_window_only = AlertPolicy {
            span_seconds: 300,
            ..policy()
        };
        assert!(evaluate(&rows, &[], &per_window_only).is_empty());
    }

    #[test]
    fn a_slow_scan_fires_over_the_span_and_a_steady_client_does_not() {
        // 19 new ports every 5 minutes for an hour: every window under the threshold.
        let slow: Vec<StoredCounter> = (0..12u16)
            .map(|i| row(S, u64::from(i) * 300, 19, i * 19 + 1..=i * 19 + 19, [1]))
            .collect();
        let findings = evaluate(&slow, &[], &policy());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].rules, vec![Rule::PortScan]);
        // The same 19 ports every window is 19 distinct ports in any span.
        let steady: Vec<StoredCounter> = (0..12u64)
            .map(|i| row(S, i * 300, 19, 1..=19, [1]))
            .collect();
        assert!(evaluate(&steady, &[], &policy()).is_empty());
    }

    #[test]
    fn volume_is_a_rate_per_window_not_a_count_over_a_span() {
        // 60 + 60 REJECTs of one service: a busy client, under 100 in each window.
        let rows = [row(S, 0, 60, [443], [1]), row(S, 300, 60, [443], [1])];
        assert!(evaluate(&rows, &[], &policy()).is_empty());
        // The read limit follows the scan rules (20 / 3 windows), or volume if lower.
        let low_volume = AlertPolicy {
            volume_threshold: 5,
            ..policy()
        };
        assert_eq!(low_volume.min_rejects_to_read(300), 5);
    }

    #[test]
    fn a_span_only_joins_windows_within_its_length() {
        // 15 ports, then 15 more two spans later: never 20 within 15 minutes.
        let rows = [row(S, 0, 15, 1..=15, [1]), row(S, 900, 15, 16..=30, [1])];
        assert!(evaluate(&rows, &[], &policy()).is_empty());
        // Three windows apart is still one span of 15 minutes (0, 300, 600).
        let rows = [row(S, 0, 15, 1..=15, [1]), row(S, 600, 15, 16..=30, [1])];
        assert_eq!(
            evaluate(&rows, &[], &policy())[0].span,
            Some(Span { start: 0, end: 900 })
        );
    }

    #[test]
    fn a_span_after_a_row_that_fires_alone_still_fires() {
        // 25 ports fire alone in window 0; 10 new ports in each of the next two windows
        // make 20 in the span ending at 900, where the source has no row.
        let rows = [
            row(S, 0, 25, 1..=25, [1]),
            row(S, 300, 10, 26..=35, [1]),
            row(S, 600, 10, 36..=45, [1]),
        ];
        let findings = evaluate(&rows, &[], &policy());
        assert_eq!(findings[0].windows, vec![0, 300, 600]);
        assert_eq!(
            findings[0].span,
            Some(Span {
                start: 300,
                end: 900
            })
        );
        // Evaluated from 900 on, the rows before are context: only the span fires.
        let later = evaluate_since(&rows, &[], &policy(), 900);
        assert_eq!(later[0].windows, vec![300, 600]);
        assert_eq!(later[0].rejects, 20);
    }

    #[test]
    fn a_window_that_fires_alone_does_not_drag_its_neighbours_in() {
        let rows = [row(S, 0, 150, [22], [1]), row(S, 300, 40, [22], [1])];
        let findings = evaluate(&rows, &[], &policy());
        assert_eq!(findings[0].rules, vec![Rule::Volume]);
        assert_eq!(findings[0].windows, vec![0]);
        assert_eq!(findings[0].rejects, 150);
        assert_eq!(findings[0].span, None);
    }

    #[test]
    fn context_rows_join_spans_but_never_fire_alone() {
        let context = row(S, 0, 150, 1..=15, [1]);
        let evaluated = row(S, 300, 15, 16..=30, [1]);
        // Window 0 was evaluated (and alerted) by an earlier run.
        assert!(evaluate_since(std::slice::from_ref(&context), &[], &policy(), 300).is_empty());
        let findings = evaluate_since(&[context, evaluated], &[], &policy(), 300);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].rules, vec![Rule::PortScan]);
        assert_eq!(findings[0].span, Some(Span { start: 0, end: 600 }));
    }

    /// Late rows put a window that an earlier run evaluated (now context) over a threshold:
    /// the span that holds it and an evaluated window alerts it, rather than no run ever.
    #[test]
    fn a_context_window_that_crossed_with_late_rows_is_alerted_over_a_span() {
        let crossed_late = row(S, 0, 20, 1..=20, [1]);
        let quiet = row(S, 300, 1, [22], [1]);
        let findings = evaluate_since(&[crossed_late, quiet], &[], &policy(), 300);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].rules, vec![Rule::PortScan]);
        assert_eq!(findings[0].span, Some(Span { start: 0, end: 600 }));
    }

    #[test]
    fn rows_under_the_read_limit_are_fetched_where_a_span_could_cross() {
        let policy = policy();
        assert_eq!(policy.span_windows(300), 3);
        assert_eq!(policy.min_rejects_to_read(300), 7);
        // 18 ports in window 300 were read; the 2 more in windows 0 and 600 were not.
        let read = [row(S, 300, 18, 1..=18, [1])];
        assert!(evaluate(&read, &[], &policy).is_empty());
        assert_eq!(
            incomplete_spans(&read, &policy, 300, (0, 600), 7),
            vec![(S.parse().unwrap(), 0, 600)]
        );
        let all = [
            row(S, 0, 1, [19], [1]),
            row(S, 300, 18, 1..=18, [1]),
            row(S, 600, 1, [20], [1]),
        ];
        let findings = evaluate(&all, &[], &policy);
        assert_eq!(findings[0].rules, vec![Rule::PortScan]);
        assert_eq!(
            (findings[0].rejects, findings[0].windows.clone()),
            (20, vec![0, 300, 600])
        );
        // 19 ports and 150 REJECTs: volume fires alone, but a port scan could still come
        // together over the span, so the rows under the limit are read.
        let busy = [row(S, 300, 150, 1..=19, [1])];
        assert_eq!(incomplete_spans(&busy, &policy, 300, (0, 600), 7).len(), 1);
        // Nothing to fetch: no span can cross (7 + 6 + 6 < 20), or every window was read,
        // or the row already fires alone.
        let small = [row(S, 300, 7, 1..=7, [1])];
        assert!(incomplete_spans(&small, &policy, 300, (0, 600), 7).is_empty());
        assert!(incomplete_spans(&all, &policy, 300, (0, 600), 1).is_empty());
        let alone = [row(S, 300, 30, 1..=25, [1])];
        assert!(incomplete_spans(&alone, &policy, 300, (0, 600), 7).is_empty());
        // Spans that end after the evaluated windows are the next runs' to look at.
        assert_eq!(
            incomplete_spans(&read, &policy, 300, (0, 300), 7),
            vec![(S.parse().unwrap(), 0, 300)]
        );
    }

    #[test]
    fn severity_grows_with_the_excess() {
        assert_eq!(Severity::of(100, 100), Severity::Low);
        assert_eq!(Severity::of(400, 100), Severity::Medium);
        assert_eq!(Severity::of(1600, 100), Severity::High);
        let findings = evaluate(&[row("198.51.100.1", 0, 2000, [22], [1])], &[], &policy());
        assert_eq!(findings[0].severity, Severity::High);
    }

    #[test]
    fn allowlisted_sources_are_never_alerted() {
        assert!(
            evaluate(
                &[
                    row("192.0.2.7", 0, 10_000, [22], [1]),
                    row("2001:db8:ffff::9", 0, 10_000, [22], [1])
                ],
                &[],
                &policy()
            )
            .is_empty()
        );
    }

    #[test]
    fn an_ipv4_mapped_source_is_its_ipv4_address_for_the_allowlist_and_the_alert() {
        let findings = evaluate(
            &[
                row("::ffff:192.0.2.7", 0, 10_000, [22], [1]),
                row("::ffff:198.51.100.7", 0, 150, [22], [1]),
            ],
            &[],
            &policy(),
        );
        let sources: Vec<String> = findings.iter().map(|f| f.source.to_string()).collect();
        assert_eq!(sources, vec!["198.51.100.7"]);
    }

    #[test]
    fn internal_sources_come_last_in_a_section_of_their_own() {
        let rows = [
            row("10.0.3.4", 0, 5_000, [22], [1]),
            row("198.51.100.1", 0, 150, [22], [1]),
        ];
        let findings = evaluate(&rows, &[], &policy());
        assert_eq!(
            findings.iter().map(|f| f.internal).collect::<Vec<_>>(),
            vec![false, true]
        );
        let digest = render_digest(&findings, &context()).unwrap();
        assert!(
            digest.subject.contains("top 198.51.100.1"),
            "{}",
            digest.subject
        );
        assert_eq!(digest.internal_count, 1);
        let section = digest.text.find("Inside the VPC's own ranges").unwrap();
        assert!(digest.text.find("198.51.100.1").unwrap() < section);
        assert!(digest.text[section..].contains("2. 10.0.3.4 [high] volume (internal)"));
        let json: serde_json::Value = serde_json::from_str(&digest.json).unwrap();
        assert_eq!(json["internal_count"], 1);
    }

    #[test]
    fn internal_sources_are_reported_apart_or_excluded() {
        let rows = [row("10.0.3.4", 0, 500, [22], [1])];
        assert!(evaluate(&rows, &[], &policy())[0].internal);
        let exclude = AlertPolicy {
            internal_sources: InternalSources::Exclude,
            ..policy()
        };
        assert!(evaluate(&rows, &[], &exclude).is_empty());
    }

    #[test]
    fn windows_combine_per_source_and_skipdata_marks_a_lower_bound() {
        let rows = [
            row("198.51.100.1", 0, 150, [22], [1]),
            row("198.51.100.1", 300, 120, [22], [1]),
        ];
        let findings = evaluate(&rows, &[300], &policy());
        assert_eq!(findings.len(), 1);
        assert_eq!(
            (findings[0].rejects, findings[0].windows.clone()),
            (270, vec![0, 300])
        );
        assert!(findings[0].lower_bound);
        assert_eq!((findings[0].first_seen, findings[0].last_seen), (5, 550));
    }

    #[test]
    fn cooldown_rising_severity_and_abandoned_claims() {
        let claim = |now, wall_now| Claim {
            run_id: "run-2".into(),
            now,
            wall_now,
            held_until: wall_now + 300,
            cooldown_seconds: 3600,
            expires_at: 0,
        };
        let published = Some(AlertState {
            level: 1,
            claimed_at: 1000,
            held_until: 1300,
            published: true,
        });
        assert_eq!(
            decide_claim(None, false, 1, 1000, &claim(1000, 1000)),
            ClaimDecision::Claim
        );
        assert_eq!(
            decide_claim(published, false, 1, 2000, &claim(2000, 2000)),
            ClaimDecision::Cooldown
        );
        assert_eq!(
            decide_claim(published, true, 1, 2000, &claim(2000, 2000)),
            ClaimDecision::Cooldown
        );
        assert_eq!(
            decide_claim(published, false, 2, 2000, &claim(2000, 2000)),
            ClaimDecision::Claim
        );
        // After the cooldown (over at 4600), activity in a window that ended after it
        // alerts again; windows from before it, which runs still re-read, do not.
        assert_eq!(
            decide_claim(published, false, 1, 4601, &claim(4700, 4700)),
            ClaimDecision::Claim
        );
        assert_eq!(
            decide_claim(published, false, 1, 4600, &claim(4700, 4700)),
            ClaimDecision::Cooldown
        );
        assert_eq!(
            decide_claim(published, false, 1, 1300, &claim(6000, 6000)),
            ClaimDecision::Cooldown
        );
        // A first claim given back (level 0, unpublished) is as good as none.
        let released = Some(AlertState {
            level: 0,
            claimed_at: 0,
            held_until: 0,
            published: false,
        });
        assert_eq!(
            decide_claim(released, false, 1, 2000, &claim(2000, 2000)),
            ClaimDecision::Claim
        );
        // A run scheduled at 1000 but claiming at 1900 (a delayed retry) is alive until
        // its deadline, whatever its scheduled time.
        let unconfirmed = Some(AlertState {
            level: 1,
            claimed_at: 1000,
            held_until: 2200,
            published: false,
        });
        assert_eq!(
            decide_claim(unconfirmed, false, 1, 1300, &claim(1300, 1950)),
            ClaimDecision::HeldElsewhere
        );
        assert_eq!(
            decide_claim(unconfirmed, true, 1, 1300, &claim(1300, 1950)),
            ClaimDecision::Claim
        );
        assert_eq!(
            decide_claim(unconfirmed, false, 1, 1300, &claim(1300, 2200)),
            ClaimDecision::Abandoned
        );
    }

    fn context() -> DigestContext<'static> {
        DigestContext {
            digest_id: "run-1",
            evaluated_at: 1200,
            windows: &[0, 300, 600],
            window_seconds: 300,
            table_name: "counters",
            query_hint: "aws dynamodb query --table-name counters --index-name by-window \
                         --key-condition-expression 'gsi1pk = :w' \
                         --expression-attribute-values '{\":w\":{\"S\":\"WIN#<window>#<shard>\"}}' \
                         for each window above and each shard 00..15",
            max_listed: 50,
        }
    }

    #[test]
    fn digest_has_a_short_subject_text_and_json() {
        let findings = evaluate(
            &[row("198.51.100.2", 0, 30, 1..=30, [0x0a00_0001])],
            &[],
            &policy(),
        );
        let digest = render_digest(&findings, &context()).unwrap();
        assert_eq!(
            digest.subject,
            "RejectWatch low: 1 source - top 198.51.100.2 port-scan (30 REJECTs)"
        );
        assert!(digest.text.contains("1. 198.51.100.2 [low] port-scan"));
        // 30 ports are kept exactly (see `EXACT_VALUES`), so no `~`.
        assert_eq!(findings[0].distinct_dst_ports, 30);
        assert!(
            digest.text.contains("30 REJECTs, 30 ports, 1 hosts"),
            "{}",
            digest.text
        );
        assert!(
            digest
                .text
                .contains("rejectwatch top --table counters --window 600 --limit 0")
        );
        assert!(digest.text.contains("--window 0 --limit 0"));
        assert!(digest.text.contains("each shard 00..15"));
        assert!(digest.text.ends_with("Digest id: run-1\n"));
        let json: serde_json::Value = serde_json::from_str(&digest.json).unwrap();
        assert_eq!(json["digest_id"], "run-1");
        assert_eq!(json["sources"][0]["source"], "198.51.100.2");
        assert_eq!(json["sources"][0]["rules"], json!(["port-scan"]));
        assert_eq!(json["sources"][0]["sample_hosts"], json!(["10.0.0.1"]));
        let structure: serde_json::Value =
            serde_json::from_str(&digest.message_structure()).unwrap();
        assert_eq!(structure["email"], digest.text.as_str());
        assert_eq!(structure["default"], digest.json.as_str());
    }

    #[test]
    fn no_findings_no_digest() {
        assert!(render_digest(&[], &context()).is_none());
    }

    #[test]
    fn five_thousand_offenders_stay_within_sns_limits() {
        let rows: Vec<StoredCounter> = (0..5000u32)
            .map(|i| {
                row(
                    &std::net::Ipv4Addr::from(0xC633_6400 + i).to_string(),
                    0,
                    150 + u64::from(i),
                    1..=64,
                    0..64,
                )
            })
            .collect();
        let findings = evaluate(&rows, &[], &policy());
        assert_eq!(findings.len(), 5000);
        let digest = render_digest(
            &findings,
            &DigestContext {
                max_listed: 5000,
                ..context()
            },
        )
        .unwrap();
        assert!(
            digest.message_structure().len() <= SNS_MESSAGE_LIMIT,
            "{}",
            digest.message_structure().len()
        );
        assert!(
            digest.subject.len() < 100
                && digest.subject.is_ascii()
                && !digest.subject.contains('\n')
        );
        assert!(digest.text.contains("more source(s)"));
        assert_eq!(digest.source_count, 5000);
    }

    #[test]
    fn crafted_log_text_cannot_inject_into_messages() {
        let mut evil = row("198.51.100.2", 0, 30, 1..=30, [1]);
        evil.interfaces = vec!["eni-1\nSubject: you are hacked\r\n<script>".into()];
        evil.reject_reasons = vec![("BPA\n\nclick http://evil".into(), 3)];
        let findings = evaluate(&[evil], &[], &policy());
        let digest = render_digest(&findings, &context()).unwrap();
        assert!(!digest.text.contains("\nSubject"));
        assert!(!digest.text.contains("<script>"));
        assert!(
            digest
                .text
                .contains("interfaces eni-1?Subject:?you?are?hacked???script?")
        );
        assert!(
            digest
                .text
                .contains("reject reasons BPA??click?http://evil 3")
        );
        assert!(!digest.subject.contains('\n'));
    }
}
