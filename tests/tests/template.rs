//! `template.yaml` and the functions agree on configuration: every environment variable a
//! function reads is set by the template under the same name, and every variable the
//! template sets is read.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde_yaml_ng::Value;

/// The variables a configuration reads, found by recording its lookups (required ones get
/// a dummy value so that reading goes on past them).
fn variables_read<T, E>(
    read: impl Fn(&dyn Fn(&str) -> Option<String>) -> Result<T, E>,
    required: &[&str],
) -> BTreeSet<String> {
    let seen = RefCell::new(BTreeSet::new());
    let lookup = |name: &str| {
        seen.borrow_mut().insert(name.to_owned());
        required.contains(&name).then(|| "x".to_owned())
    };
    let _ = read(&lookup);
    seen.into_inner()
}

fn template_variables(function: &str) -> BTreeSet<String> {
    let text = include_str!("../../template.yaml");
    let template: Value = serde_yaml_ng::from_str(text).expect("template.yaml is YAML");
    let variables = &template["Resources"][function]["Properties"]["Environment"]["Variables"];
    variables
        .as_mapping()
        .unwrap_or_else(|| panic!("{function} has environment variables"))
        .keys()
        .map(|key| key.as_str().expect("a variable name").to_owned())
        .collect()
}

#[test]
fn ingest_variables_match_the_template() {
    let read = variables_read(
        |lookup| ingest_flow_logs::config::Config::from_lookup(lookup),
        &["COUNTERS_TABLE_NAME"],
    );
    assert_eq!(template_variables("IngestFunction"), read);
}

#[test]
fn evaluate_variables_match_the_template() {
    let read = variables_read(
        |lookup| evaluate_rejects::config::Config::from_lookup(lookup),
        &["COUNTERS_TABLE_NAME", "ALERT_TOPIC_ARN"],
    );
    assert_eq!(template_variables("EvaluateFunction"), read);
}

#[test]
fn the_template_defaults_parse_as_the_functions_would() {
    // The template passes its defaults through; each must be valid for the function.
    let text = include_str!("../../template.yaml");
    let template: Value = serde_yaml_ng::from_str(text).unwrap();
    let default = |name: &str| {
        template["Parameters"][name]["Default"]
            .as_str()
            .map(str::to_owned)
    };
    let format = default("FlowLogFormat").expect("a default LogFormat");
    assert_eq!(
        shared::flow_log::FlowFormat::from_log_format(&format).unwrap(),
        shared::flow_log::FlowFormat::default()
    );
    let pattern = template["Resources"]["IngestFunction"]["Properties"]["Environment"]["Variables"]
        ["FLOW_LOG_KEY_PATTERN"]
        .as_str()
        .unwrap();
    assert_eq!(pattern, ingest_flow_logs::config::DEFAULT_KEY_PATTERN);
}
