//! The evaluate function's configuration: read once from the environment at start, typed,
//! with every default in one place (the README's configuration table lists them).

use ipnet::IpNet;
use shared::alert::{AlertPolicy, InternalSources};
pub use shared::settings::ConfigError;
use shared::settings::{list, number, required};

/// The most windows a run reaches back to after failed runs (an hour of 5-minute windows).
pub const MAX_CATCH_UP_WINDOWS: u64 = 12;

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
    /// `LOOKBACK_WINDOWS` (3): completed windows evaluated each run, the latest last, so
    /// that S3 objects delivered late are still seen.
    pub lookback_windows: u64,
    /// `REJECT_THRESHOLD` (500), `PORT_SCAN_THRESHOLD` (20), `HOST_SWEEP_THRESHOLD` (20),
    /// `ALLOWLIST_CIDRS`, `VPC_CIDRS`, `INTERNAL_SOURCES`. (`IGNORED_DST_PORTS` is the
    /// ingest function's: ignored ports are never counted.)
    pub policy: AlertPolicy,
    /// `ALERT_COOLDOWN_MINUTES` (60): a source alerted is not alerted again within this
    /// long unless its severity rises.
    pub cooldown_seconds: u64,
    /// `MAX_LISTED_SOURCES` (50): sources listed in full in a digest.
    pub max_listed: usize,
    /// `RETENTION_DAYS` (7): alert state is forgotten this long after the cooldown.
    pub retention_seconds: u64,
}

impl Config {
    /// How far back a run may reach after failed runs: [`MAX_CATCH_UP_WINDOWS`], or a
    /// cooldown's worth of windows if that is less (an older finding would alert again
    /// anyway), and never less than the look-back. The cap keeps a run that follows a long
    /// outage as short as any other, so that one failure cannot become permanent.
    pub fn max_catch_up_windows(&self) -> u64 {
        (self.cooldown_seconds / self.window_seconds.max(1))
            .min(MAX_CATCH_UP_WINDOWS)
            .max(self.lookback_windows)
    }

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
        let config = Config {
            table_name: required(&lookup, "COUNTERS_TABLE_NAME")?,
            topic_arn: required(&lookup, "ALERT_TOPIC_ARN")?,
            window_seconds: number(&lookup, "WINDOW_MINUTES", 5, 1..=1440)? * 60,
            index_shards: number(&lookup, "INDEX_SHARDS", 16, 1..=64)? as u8,
            lookback_windows: number(&lookup, "LOOKBACK_WINDOWS", 3, 1..=288)?,
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
                allowlist: list(&lookup, "ALLOWLIST_CIDRS", parse_net)?,
                internal_ranges: list(&lookup, "VPC_CIDRS", parse_net)?,
                internal_sources,
            },
            cooldown_seconds: number(&lookup, "ALERT_COOLDOWN_MINUTES", 60, 1..=43_200)? * 60,
            max_listed: number(&lookup, "MAX_LISTED_SOURCES", 50, 1..=5_000)? as usize,
            retention_seconds: number(&lookup, "RETENTION_DAYS", 7, 1..=3650)? * 86_400,
        };
        // A cooldown shorter than the look-back would alert again on the very windows it
        // already alerted on, every cooldown.
        let lookback_seconds = config.lookback_windows * config.window_seconds;
        if config.cooldown_seconds < lookback_seconds {
            return Err(ConfigError::Invalid {
                name: "ALERT_COOLDOWN_MINUTES",
                value: (config.cooldown_seconds / 60).to_string(),
                reason: format!(
                    "must be at least LOOKBACK_WINDOWS x WINDOW_MINUTES = {} minutes",
                    lookback_seconds / 60
                ),
            });
        }
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
                config.lookback_windows,
                config.cooldown_seconds
            ),
            (300, 3, 3600)
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
    fn a_cooldown_shorter_than_the_look_back_is_refused() {
        let mut pairs = REQUIRED.to_vec();
        pairs.extend([("LOOKBACK_WINDOWS", "24"), ("ALERT_COOLDOWN_MINUTES", "60")]);
        let error = config(&pairs).unwrap_err().to_string();
        assert!(error.contains("ALERT_COOLDOWN_MINUTES"), "{error}");
        assert!(error.contains("120 minutes"), "{error}");
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
