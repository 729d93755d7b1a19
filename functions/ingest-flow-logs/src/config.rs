//! The ingest function's configuration: read once from the environment at start, typed,
//! with every default in one place (the README's configuration table lists them).

use std::collections::HashMap;

use regex_lite::Regex;
use rejectwatch_core::flow_log::{FlowFormat, FormatError};
pub use rejectwatch_core::settings::ConfigError;
use rejectwatch_core::settings::{flag, list, number, required};
use rejectwatch_core::settle::DEFAULT_SETTLE_MINUTES;
use rejectwatch_core::tally::SourceAttribution;

/// Matches the keys VPC Flow Logs writes, in the plain and the Hive-compatible layouts
/// (and the transit gateway guide's `service=` spelling), under any bucket prefix; shared
/// with `rejectwatch replay`, which lists the same keys.
pub use rejectwatch_core::object_key::FLOW_LOG_KEY_PATTERN as DEFAULT_KEY_PATTERN;

/// Settings of the ingest function.
#[derive(Clone, Debug)]
pub struct Config {
    /// `COUNTERS_TABLE_NAME` (required): the DynamoDB table of counters.
    pub table_name: String,
    /// `FLOW_LOG_FORMAT`: the `LogFormat` of CloudWatch Logs records (they have no header).
    /// Default: the version-2 default format.
    pub default_format: FlowFormat,
    /// `FLOW_LOG_FORMATS_BY_LOG_GROUP`: JSON object of log group name to `LogFormat`, for
    /// log groups whose flow log uses another format. Default: none.
    pub formats_by_log_group: HashMap<String, FlowFormat>,
    /// `WINDOW_MINUTES`: counter window length. Default 5.
    pub window_seconds: u64,
    /// `SETTLE_MINUTES`: how long after a window ends its rows may still arrive; rows
    /// written later are reported as late (they may never be alerted). Default 50; the
    /// evaluator must use the same value.
    pub settle_seconds: u64,
    /// `RETENTION_DAYS`: how long counters are kept after their window (TTL). Default 7.
    pub retention_seconds: u64,
    /// `INDEX_SHARDS`: partitions per window in the `by-window` index. Default 16. The
    /// evaluator must use the same value.
    pub index_shards: u8,
    /// `ATTRIBUTE_TO_PKT_SRCADDR`: count REJECTs against `pkt-srcaddr` when present.
    /// Default false.
    pub attribution: SourceAttribution,
    /// `FLOW_LOG_KEY_PATTERN`: regular expression an S3 key must match to be read.
    pub key_pattern: Regex,
    /// `COUNT_CLOUDWATCH_LOG_GROUPS`: which log groups' events are counted: `*` (default),
    /// empty for none, or a comma-separated list.
    pub count_log_groups: Selection,
    /// `COUNT_S3_BUCKETS`: which buckets' objects are counted: `*` (default), empty for
    /// none, or a comma-separated list.
    pub count_buckets: Selection,
    /// `MAX_DECOMPRESSED_MIB`: decompressed size at which an object is refused. Default 4096.
    pub max_decompressed_bytes: u64,
    /// `WRITE_CONCURRENCY`: DynamoDB transactions (chunks of up to 99 rows) in flight at
    /// once. Default 16.
    pub write_concurrency: usize,
    /// `IGNORED_DST_PORTS`: comma-separated destination ports whose REJECTs are not counted
    /// at all (expected noise). Default none.
    pub ignored_dst_ports: Vec<u16>,
}

/// Which log groups or buckets are counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    All,
    Only(Vec<String>),
}

impl Selection {
    fn parse(text: &str) -> Selection {
        match text.trim() {
            "*" => Selection::All,
            list => Selection::Only(
                list.split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
        }
    }

    /// Whether `name` is selected.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Only(names) => names.iter().any(|selected| selected == name),
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need no process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let table_name = required(&lookup, "COUNTERS_TABLE_NAME")?;
        let default_format = match lookup("FLOW_LOG_FORMAT") {
            Some(text) => parse_format("FLOW_LOG_FORMAT", &text)?,
            None => FlowFormat::default(),
        };
        let formats_by_log_group = match lookup("FLOW_LOG_FORMATS_BY_LOG_GROUP") {
            Some(json) if !json.trim().is_empty() => {
                let invalid = |reason: String| ConfigError::Invalid {
                    name: "FLOW_LOG_FORMATS_BY_LOG_GROUP",
                    value: json.clone(),
                    reason,
                };
                let raw: HashMap<String, String> = serde_json::from_str(&json)
                    .map_err(|error| invalid(format!("not a JSON object of strings: {error}")))?;
                raw.into_iter()
                    .map(|(group, text)| {
                        FlowFormat::from_log_format(&text)
                            .map(|format| (group.clone(), format))
                            .map_err(|error| invalid(format!("log group {group:?}: {error}")))
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => HashMap::new(),
        };
        let key_pattern_text =
            lookup("FLOW_LOG_KEY_PATTERN").unwrap_or_else(|| DEFAULT_KEY_PATTERN.to_owned());
        let key_pattern = Regex::new(&key_pattern_text).map_err(|error| ConfigError::Invalid {
            name: "FLOW_LOG_KEY_PATTERN",
            value: key_pattern_text.clone(),
            reason: error.to_string(),
        })?;
        Ok(Config {
            table_name,
            default_format,
            formats_by_log_group,
            window_seconds: number(&lookup, "WINDOW_MINUTES", 5, 1..=1440)? * 60,
            settle_seconds: number(&lookup, "SETTLE_MINUTES", DEFAULT_SETTLE_MINUTES, 0..=1440)?
                * 60,
            retention_seconds: number(&lookup, "RETENTION_DAYS", 7, 1..=3650)? * 86_400,
            index_shards: number(&lookup, "INDEX_SHARDS", 16, 1..=64)? as u8,
            attribution: if flag(&lookup, "ATTRIBUTE_TO_PKT_SRCADDR", false)? {
                SourceAttribution::PktSrcAddr
            } else {
                SourceAttribution::SrcAddr
            },
            key_pattern,
            count_log_groups: Selection::parse(
                &lookup("COUNT_CLOUDWATCH_LOG_GROUPS").unwrap_or_else(|| "*".into()),
            ),
            count_buckets: Selection::parse(
                &lookup("COUNT_S3_BUCKETS").unwrap_or_else(|| "*".into()),
            ),
            max_decompressed_bytes: number(&lookup, "MAX_DECOMPRESSED_MIB", 4096, 1..=65_536)?
                << 20,
            write_concurrency: number(&lookup, "WRITE_CONCURRENCY", 16, 1..=256)? as usize,
            ignored_dst_ports: list(&lookup, "IGNORED_DST_PORTS", |text| {
                text.parse::<u16>().ok()
            })?,
        })
    }

    /// The format of a log group's records.
    pub fn format_for(&self, log_group: &str) -> &FlowFormat {
        self.formats_by_log_group
            .get(log_group)
            .unwrap_or(&self.default_format)
    }
}

fn parse_format(name: &'static str, text: &str) -> Result<FlowFormat, ConfigError> {
    FlowFormat::from_log_format(text).map_err(|error: FormatError| ConfigError::Invalid {
        name,
        value: text.to_owned(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_need_only_the_table() {
        let config = config(&[("COUNTERS_TABLE_NAME", "counters")]).unwrap();
        assert_eq!(config.window_seconds, 300);
        assert_eq!(config.retention_seconds, 7 * 86_400);
        assert_eq!(config.index_shards, 16);
        assert_eq!(config.default_format, FlowFormat::default());
        assert!(config.count_log_groups.includes("/any/group"));
        assert_eq!(config.max_decompressed_bytes, 4 << 30);
        assert!(config.ignored_dst_ports.is_empty());
    }

    #[test]
    fn ignored_ports_are_a_list_of_port_numbers() {
        let ports = config(&[
            ("COUNTERS_TABLE_NAME", "t"),
            ("IGNORED_DST_PORTS", "123, 53"),
        ]);
        assert_eq!(ports.unwrap().ignored_dst_ports, vec![123, 53]);
        let error = config(&[("COUNTERS_TABLE_NAME", "t"), ("IGNORED_DST_PORTS", "ntp")]);
        assert!(error.unwrap_err().to_string().contains("IGNORED_DST_PORTS"));
    }

    #[test]
    fn missing_table_names_the_variable() {
        let error = config(&[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable COUNTERS_TABLE_NAME is required"
        );
    }

    #[test]
    fn invalid_values_name_variable_and_value() {
        let error =
            config(&[("COUNTERS_TABLE_NAME", "t"), ("WINDOW_MINUTES", "five")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable WINDOW_MINUTES=\"five\": expected a whole number from 1 to 1440"
        );
        let error = config(&[
            ("COUNTERS_TABLE_NAME", "t"),
            ("FLOW_LOG_FORMAT", "${srcaddr"),
        ])
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("environment variable FLOW_LOG_FORMAT=\"${srcaddr\""),
            "{error}"
        );
    }

    #[test]
    fn per_log_group_formats_override_the_default() {
        let config = config(&[
            ("COUNTERS_TABLE_NAME", "t"),
            ("FLOW_LOG_FORMAT", "${srcaddr} ${action}"),
            (
                "FLOW_LOG_FORMATS_BY_LOG_GROUP",
                r#"{"/vpc/custom": "${action} ${srcaddr} ${dstport}"}"#,
            ),
        ])
        .unwrap();
        assert_eq!(config.format_for("/vpc/custom").width(), 3);
        assert_eq!(config.format_for("/vpc/other").width(), 2);
    }

    #[test]
    fn the_default_key_pattern_matches_both_layouts_only() {
        let config = config(&[("COUNTERS_TABLE_NAME", "t")]).unwrap();
        for key in [
            "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/123456789012_vpcflowlogs_us-east-1_fl-1234abcd_20240501T1620Z_fe123456.log.gz",
            "prefix/AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=us-east-1/year=2024/month=05/day=01/x.log.gz",
            "AWSLogs/aws-account-id=123456789012/service=vpcflowlogs/aws-region=us-east-1/year=2024/x.log.gz",
            "AWSLogs/123456789012/vpcflowlogs/us-east-1/2024/05/01/123456789012_vpcflowlogs_us-east-1_fl-1234abcd_20240501T1620Z_fe123456.log.parquet",
        ] {
            assert!(config.key_pattern.is_match(key), "{key}");
        }
        for key in [
            "AWSLogs/123456789012/CloudTrail/us-east-1/x.json.gz",
            "notes/vpcflowlogs.txt",
            "MyAWSLogs/123456789012/vpcflowlogs/x",
        ] {
            assert!(!config.key_pattern.is_match(key), "{key}");
        }
    }

    #[test]
    fn selections_list_names_or_everything_or_nothing() {
        assert!(Selection::parse("*").includes("x"));
        assert!(!Selection::parse("").includes("x"));
        let only = Selection::parse(" a , b ");
        assert!(only.includes("a") && only.includes("b") && !only.includes("c"));
    }
}
