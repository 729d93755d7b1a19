//! The evaluate function's configuration: read once from the environment at start, typed,
//! with every default in one place (the README's configuration table lists them).

use ipnet::IpNet;
use rejectwatch_core::alert::{AlertPolicy, InternalSources};
pub use rejectwatch_core::settings::ConfigError;
use rejectwatch_core::settings::{list, number, required};
use rejectwatch_core::settle::DEFAULT_SETTLE_MINUTES;

/// How far back before the windows not settled yet (which it reads anyway) a run reads
/// settled windows again after failed runs: an hour. Older ones are given up, and the run
/// says so (`given_up_windows`).
pub const MAX_CATCH_UP_SECONDS: u64 = 3_600;

/// Settings of the evaluate function.
#[derive(Clone, Debug)]
pub struct Config {
    /// `COUNTERS_TABLE_NAME` (required).
    pub table_name: String,
    /// `ALERT_TOPIC_ARN` (required): the SNS topic for digests.
    pub topic_arn: String,
    /// `WINDOW_MINUTES` (5): must equal the ingest function's.
    pub window_seconds: u64,
    /// `INDEX_SHARDS` (16): must equal the ingest function's.
    pub index_shards: u8,
    /// `SETTLE_MINUTES` (50): how long after a window ends its rows may still arrive
    /// (aggregation, AWS's delivery, retries). Every run reads each completed window until
    /// then, so a finding that late data creates is still alerted.
    pub settle_seconds: u64,
    /// `REJECT_THRESHOLD` (500), `PORT_SCAN_THRESHOLD` (20), `HOST_SWEEP_THRESHOLD` (20),
    /// `SCAN_SPAN_MINUTES` (15, at most 60: the scan rules also apply to a source's
    /// windows merged over this long; at most `WINDOW_MINUTES` turns spans off), `ALLOWLIST_CIDRS`,
    /// `VPC_CIDRS`, `INTERNAL_SOURCES`. (`IGNORED_DST_PORTS` is the
    /// ingest function's: ignored ports are never counted.)
    pub policy: AlertPolicy,
    /// `ALERT_COOLDOWN_MINUTES` (60): a source alerted is not alerted again within this
    /// long unless its severity rises. At least `SETTLE_MINUTES` + `WINDOW_MINUTES`, and
    /// at least `SCAN_SPAN_MINUTES`: a shorter one is raised to that (see [`Config::requested_cooldown_seconds`]).
    pub cooldown_seconds: u64,
    /// `ALERT_COOLDOWN_MINUTES` as set, before any raise (logged at start when it differs).
    pub requested_cooldown_seconds: u64,
    /// `MAX_LISTED_SOURCES` (50): sources listed in full in a digest.
    pub max_listed: usize,
    /// `RETENTION_DAYS` (7): alert state is forgotten this long after the cooldown.
    pub retention_seconds: u64,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need no process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let internal_text = lookup("INTERNAL_SOURCES").unwrap_or_else(|| "report".into());
        let internal_sources = match internal_text.trim() {
            "report" => InternalSources::Report,
            "exclude" => InternalSources::Exclude,
            "include" => InternalSources::Include,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "INTERNAL_SOURCES",
                    value: internal_text,
                    reason: "expected report, exclude or include".into(),
                });
            }
        };
        let mut config = Config {
            table_name: required(&lookup, "COUNTERS_TABLE_NAME")?,
            topic_arn: required(&lookup, "ALERT_TOPIC_ARN")?,
            window_seconds: number(&lookup, "WINDOW_MINUTES", 5, 1..=1440)? * 60,
            index_shards: number(&lookup, "INDEX_SHARDS", 16, 1..=64)? as u8,
            settle_seconds: number(&lookup, "SETTLE_MINUTES", DEFAULT_SETTLE_MINUTES, 0..=1440)?
                * 60,
            policy: AlertPolicy {
                volume_threshold: number(
                    &lookup,
                    "REJECT_THRESHOLD",
                    500,
                    1..=u64::from(u32::MAX),
                )?,
                port_scan_threshold: number(&lookup, "PORT_SCAN_THRESHOLD", 20, 1..=65_536)?,
                host_sweep_threshold: number(
                    &lookup,
                    "HOST_SWEEP_THRESHOLD",
                    20,
                    1..=u64::from(u32::MAX),
                )?,
                span_seconds: number(&lookup, "SCAN_SPAN_MINUTES", 15, 0..=60)? * 60,
                allowlist: list(&lookup, "ALLOWLIST_CIDRS", parse_net)?,
                internal_ranges: list(&lookup, "VPC_CIDRS", parse_net)?,
                internal_sources,
            },
            cooldown_seconds: 0,
            requested_cooldown_seconds: number(&lookup, "ALERT_COOLDOWN_MINUTES", 60, 1..=43_200)?
                * 60,
            max_listed: number(&lookup, "MAX_LISTED_SOURCES", 50, 1..=5_000)? as usize,
            retention_seconds: number(&lookup, "RETENTION_DAYS", 7, 1..=3650)? * 86_400,
        };
        // A run reads each window again until it settles: a cooldown that ended sooner
        // would alert again on the very windows it already alerted on. And a span reaches
        // back over windows alerted before: a cooldown shorter than the span would let a
        // span ending after it count them again.
        config.cooldown_seconds = config
            .requested_cooldown_seconds
            .max(config.settle_seconds + config.window_seconds)
            .max(config.policy.span_seconds);
        Ok(config)
    }
}

/// A CIDR (`10.0.0.0/16`, `2001:db8::/32`) or a single address.
fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    const REQUIRED: [(&str, &str); 2] = [
        ("COUNTERS_TABLE_NAME", "t"),
        (
            "ALERT_TOPIC_ARN",
            "arn:aws:sns:us-east-1:123456789012:alerts",
        ),
    ];

    #[test]
    fn defaults() {
        let config = config(&REQUIRED).unwrap();
        assert_eq!(
            (
                config.window_seconds,
                config.settle_seconds,
                config.cooldown_seconds
            ),
            (300, 3000, 3600)
        );
        assert_eq!(config.policy.min_rejects(), 20);
        assert_eq!(config.policy.internal_sources, InternalSources::Report);
    }

    #[test]
    fn missing_topic_names_the_variable() {
        let error = config(&[("COUNTERS_TABLE_NAME", "t")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable ALERT_TOPIC_ARN is required"
        );
    }

    #[test]
    fn a_cooldown_shorter_than_the_windows_still_read_is_raised() {
        let mut pairs = REQUIRED.to_vec();
        pairs.extend([
            ("SETTLE_MINUTES", "50"),
            ("WINDOW_MINUTES", "15"),
            ("ALERT_COOLDOWN_MINUTES", "60"),
        ]);
        let config = config(&pairs).unwrap();
        assert_eq!(
            (config.requested_cooldown_seconds, config.cooldown_seconds),
            (3600, 65 * 60)
        );
    }

    #[test]
    fn a_cooldown_shorter_than_the_span_is_raised_and_spans_stay_within_an_hour() {
        let mut pairs = REQUIRED.to_vec();
        pairs.extend([
            ("SETTLE_MINUTES", "0"),
            ("SCAN_SPAN_MINUTES", "60"),
            ("ALERT_COOLDOWN_MINUTES", "30"),
        ]);
        let raised = config(&pairs).unwrap();
        assert_eq!(raised.policy.span_seconds, 3600);
        assert_eq!(raised.cooldown_seconds, 3600);
        pairs.push(("SCAN_SPAN_MINUTES", "61"));
        let error = config(&pairs).unwrap_err();
        assert!(error.to_string().contains("SCAN_SPAN_MINUTES"), "{error}");
    }

    #[test]
    fn lists_parse_or_name_the_bad_item() {
        let mut pairs = REQUIRED.to_vec();
        pairs.extend([(
            "ALLOWLIST_CIDRS",
            "192.0.2.0/24, 2001:db8::/32, 198.51.100.7",
        )]);
        let config = config(&pairs).unwrap();
        assert_eq!(config.policy.allowlist.len(), 3);
        let mut pairs = REQUIRED.to_vec();
        pairs.push(("VPC_CIDRS", "10.0.0.0/16,not-a-net"));
        let error = super::Config::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("\"not-a-net\" is not valid here"),
            "{error}"
        );
    }
}
