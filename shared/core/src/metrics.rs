//! CloudWatch Embedded Metric Format: one JSON log line that CloudWatch turns into metrics.
//! Pure: the caller passes the time.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::ports::error_chain;

/// The namespace of every RejectWatch metric.
pub const NAMESPACE: &str = "RejectWatch";

/// One EMF line: `dimensions` become both dimension keys and fields; metrics named
/// `...Ms` are `Milliseconds`, every other one a `Count`.
pub fn emf_line(
    timestamp_millis: u64,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, u64)],
) -> String {
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_millis,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions.iter().map(|(name, _)| *name).collect::<Vec<_>>()],
                "Metrics": metrics.iter().map(|(name, _)| json!({"Name": name, "Unit": unit_of(name)})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (name, value) in dimensions {
        line.insert((*name).into(), Value::from(*value));
    }
    for (name, value) in metrics {
        line.insert((*name).into(), Value::from(*value));
    }
    Value::Object(line).to_string()
}

fn unit_of(metric: &str) -> &'static str {
    if metric.ends_with("Ms") {
        "Milliseconds"
    } else {
        "Count"
    }
}

/// The one JSON line a function logs per invocation, whatever Lambda's log format: its
/// outcome (`ok`, or the error with its causes) and its counts.
pub fn summary_line<T, E: std::error::Error>(
    message: &str,
    result: &Result<T, E>,
    summary: &impl Serialize,
) -> String {
    let outcome = match result {
        Ok(_) => "ok".to_owned(),
        Err(error) => error_chain(error),
    };
    json!({"message": message, "outcome": outcome, "summary": summary}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Counts {
        records: u64,
    }

    #[test]
    fn a_summary_line_names_the_outcome_and_carries_the_counts() {
        let ok: Result<(), std::io::Error> = Ok(());
        let line: Value =
            serde_json::from_str(&summary_line("run summary", &ok, &Counts { records: 3 }))
                .unwrap();
        assert_eq!(
            line,
            json!({"message": "run summary", "outcome": "ok", "summary": {"records": 3}})
        );
        let failed: Result<(), _> = Err(std::io::Error::other("table gone"));
        let line: Value = serde_json::from_str(&summary_line(
            "run summary",
            &failed,
            &Counts { records: 0 },
        ))
        .unwrap();
        assert_eq!(line["outcome"], "table gone");
    }

    #[test]
    fn line_has_the_emf_envelope_and_values() {
        let line = emf_line(
            1_700_000_000_000,
            &[("Function", "ingest-flow-logs")],
            &[("Records", 12), ("Rejects", 3)],
        );
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["_aws"]["Timestamp"], 1_700_000_000_000u64);
        let directive = &value["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "RejectWatch");
        assert_eq!(directive["Dimensions"], json!([["Function"]]));
        assert_eq!(
            directive["Metrics"][1],
            json!({"Name": "Rejects", "Unit": "Count"})
        );
        assert_eq!(value["Function"], "ingest-flow-logs");
        assert_eq!(value["Records"], 12);
        assert!(!line.contains('\n'));
    }
}
