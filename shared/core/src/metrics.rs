//! CloudWatch Embedded Metric Format: one JSON log line that CloudWatch turns into metrics.
//! Pure: the caller passes the time.

use serde_json::{Map, Value, json};

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

#[cfg(test)]
mod tests {
    use super::*;

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
