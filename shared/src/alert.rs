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
    /// Sources never alerted on. (Ignored destination ports are dropped earlier, at
    /// ingest, so that no count includes them.)
    pub allowlist: Vec<IpNet>,
    /// The VPC's own ranges.
    pub internal_ranges: Vec<IpNet>,
    pub internal_sources: InternalSources,
}

impl AlertPolicy {
    /// The fewest REJECTs a row needs to fire any rule: a scan of N ports or hosts is at
    /// least N records. Rows below it need not be read at all.
    pub fn min_rejects(&self) -> u64 {
        self.volume_threshold
            .min(self.port_scan_threshold)
            .min(self.host_sweep_threshold)
            .max(1)
    }
}

/// A source that crossed at least one rule in the evaluated windows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub source: IpAddr,
    pub rules: Vec<Rule>,
    pub severity: Severity,
    /// REJECTs summed over the windows where a rule fired.
    pub rejects: u64,
    /// The largest distinct-port count among those windows, and whether it is exact.
    pub distinct_dst_ports: u64,
    pub distinct_dst_ports_exact: bool,
    pub distinct_dst_hosts: u64,
    pub distinct_dst_hosts_exact: bool,
    /// Starts of the windows where a rule fired.
    pub windows: Vec<u64>,
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

/// Evaluates rows of the look-back windows. `skipped_windows` are the windows where some
/// interface reported SKIPDATA. Findings come most severe first, then most REJECTs, with
/// sources inside the VPC's own ranges after all others.
pub fn evaluate(
    rows: &[StoredCounter],
    skipped_windows: &[u64],
    policy: &AlertPolicy,
) -> Vec<Finding> {
    let mut by_source: BTreeMap<IpAddr, Finding> = BTreeMap::new();
    for row in rows {
        // Rows written before addresses were normalised at parse time may hold an
        // IPv4-mapped IPv6 source: it is the IPv4 source, for the allowlist and the alert.
        let Some(source) = row.source.map(|source| source.to_canonical()) else {
            continue;
        };
        if policy.allowlist.iter().any(|net| net.contains(&source)) {
            continue;
        }
        let internal = policy
            .internal_ranges
            .iter()
            .any(|net| net.contains(&source));
        if internal && policy.internal_sources == InternalSources::Exclude {
            continue;
        }
        let (distinct_ports, ports_exact) = row.distinct_dst_ports();
        let (distinct_hosts, hosts_exact) = row.distinct_dst_hosts();
        let mut fired = Vec::new();
        let mut severity = Severity::Low;
        for (rule, value, threshold) in [
            (Rule::Volume, row.rejects, policy.volume_threshold),
            (Rule::PortScan, distinct_ports, policy.port_scan_threshold),
            (Rule::HostSweep, distinct_hosts, policy.host_sweep_threshold),
        ] {
            if threshold > 0 && value >= threshold {
                fired.push(rule);
                severity = severity.max(Severity::of(value, threshold));
            }
        }
        if fired.is_empty() {
            continue;
        }
        let finding = by_source.entry(source).or_insert_with(|| Finding {
            source,
            rules: Vec::new(),
            severity,
            rejects: 0,
            distinct_dst_ports: 0,
            distinct_dst_ports_exact: true,
            distinct_dst_hosts: 0,
            distinct_dst_hosts_exact: true,
            windows: Vec::new(),
            first_seen: u64::MAX,
            last_seen: 0,
            sample_ports: Vec::new(),
            sample_hosts: Vec::new(),
            interfaces: Vec::new(),
            reject_reasons: Vec::new(),
            internal,
            lower_bound: false,
        });
        for rule in fired {
            if !finding.rules.contains(&rule) {
                finding.rules.push(rule);
            }
        }
        finding.rules.sort();
        finding.severity = finding.severity.max(severity);
        finding.rejects += row.rejects;
        if distinct_ports >= finding.distinct_dst_ports {
            finding.distinct_dst_ports = distinct_ports;
            finding.distinct_dst_ports_exact = ports_exact;
        }
        if distinct_hosts >= finding.distinct_dst_hosts {
            finding.distinct_dst_hosts = distinct_hosts;
            finding.distinct_dst_hosts_exact = hosts_exact;
        }
        finding.windows.push(row.window_start);
        finding.windows.sort_unstable();
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
    let mut findings: Vec<Finding> = by_source.into_values().collect();
    findings.sort_by(|a, b| {
        a.internal
            .cmp(&b.internal)
            .then(b.severity.cmp(&a.severity))
            .then(b.rejects.cmp(&a.rejects))
            .then(a.source.cmp(&b.source))
    });
    findings
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
    /// Partitions per window of the `by-window` index, for the query commands shown.
    pub index_shards: u8,
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
    let last_shard = context.index_shards.max(1) - 1;
    let _ = writeln!(
        text,
        "  or: aws dynamodb query --table-name {} --index-name by-window --key-condition-expression 'gsi1pk = :w' \
         --expression-attribute-values '{{\":w\":{{\"S\":\"WIN#<window>#<shard>\"}}}}' for each window above and \
         each shard 00..{last_shard:02}",
        context.table_name
    );
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
            index_shards: 16,
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
        let ports = findings[0].distinct_dst_ports;
        assert!(crate::sketch::within_expected_error(ports, 30));
        let counts = format!("30 REJECTs, ~{ports} ports, 1 hosts");
        assert!(digest.text.contains(&counts), "{}", digest.text);
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
