//! `template.yaml` and the functions agree on configuration: every environment variable a
//! function reads is set by the template under the same name, and every variable the
//! template sets is read. The template's own values agree with each other and with the
//! data path (the settle horizon, timeouts, concurrency), its alarms reach the operations
//! topic, and its resource policies hold what the README promises.
//!
//! CloudFormation's short tags (`!Ref X`, `!GetAtt X.Arn`, `!If [..]`) arrive as tagged
//! values; [`reference`] and [`statements`] read them.

use std::cell::RefCell;
use std::collections::BTreeSet;

use rejectwatch_core::settle::{DeliveryPath, PUBLISH_ALLOWANCE_SECONDS, required_settle_seconds};
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
        rejectwatch_core::flow_log::FlowFormat::from_log_format(&format).unwrap(),
        rejectwatch_core::flow_log::FlowFormat::default()
    );
    let pattern = template["Resources"]["IngestFunction"]["Properties"]["Environment"]["Variables"]
        ["FLOW_LOG_KEY_PATTERN"]
        .as_str()
        .unwrap();
    assert_eq!(pattern, ingest_flow_logs::config::DEFAULT_KEY_PATTERN);
}

fn template() -> Value {
    serde_yaml_ng::from_str(include_str!("../../template.yaml")).expect("template.yaml is YAML")
}

/// `(tag, value)` of a short-form intrinsic such as `!Ref X` (`("Ref", "X")`), or `None`.
fn reference(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => Some((
            tagged.tag.to_string().trim_start_matches('!').to_owned(),
            &tagged.value,
        )),
        _ => None,
    }
}

fn is_ref(value: &Value, name: &str) -> bool {
    matches!(reference(value), Some((tag, target)) if tag == "Ref" && target.as_str() == Some(name))
}

fn is_get_att(value: &Value, attribute: &str) -> bool {
    matches!(reference(value), Some((tag, target)) if tag == "GetAtt" && target.as_str() == Some(attribute))
}

/// A number written as a YAML number or as a string (environment variables are strings).
fn number(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
        .unwrap_or_else(|| panic!("{what} is a number in template.yaml, found {value:?}"))
}

fn parameter_default(template: &Value, name: &str) -> u64 {
    number(
        &template["Parameters"][name]["Default"],
        &format!("the default of {name}"),
    )
}

fn properties<'a>(template: &'a Value, resource: &str) -> &'a Value {
    let properties = &template["Resources"][resource]["Properties"];
    assert!(
        properties.is_mapping(),
        "template.yaml has a resource {resource}"
    );
    properties
}

fn settle_minutes(template: &Value, function: &str) -> u64 {
    number(
        &properties(template, function)["Environment"]["Variables"]["SETTLE_MINUTES"],
        &format!("SETTLE_MINUTES of {function}"),
    )
}

/// A value or a one-element list of it, as IAM policies allow, as a list.
fn one_or_many(value: &Value) -> Vec<&Value> {
    match value.as_sequence() {
        Some(values) => values.iter().collect(),
        None => vec![value],
    }
}

fn actions(statement: &Value) -> Vec<&str> {
    one_or_many(&statement["Action"])
        .into_iter()
        .filter_map(Value::as_str)
        .collect()
}

/// The statements of a policy document; a statement under `!If [condition, statement,
/// !Ref AWS::NoValue]` counts as its statement (the template's conditions only leave out
/// statements about resources that are then absent too).
fn statements(document: &Value) -> Vec<&Value> {
    document["Statement"]
        .as_sequence()
        .expect("a policy document has a list of statements")
        .iter()
        .map(|statement| match reference(statement) {
            Some((tag, arguments)) if tag == "If" => &arguments[1],
            _ => statement,
        })
        .collect()
}

fn role_statements<'a>(template: &'a Value, role: &str) -> Vec<&'a Value> {
    properties(template, role)["Policies"]
        .as_sequence()
        .expect("the role has inline policies")
        .iter()
        .flat_map(|policy| statements(&policy["PolicyDocument"]))
        .collect()
}

/// The statements of the resource policies (`AWS::SNS::TopicPolicy`, `AWS::SQS::QueuePolicy`)
/// attached to `resource`.
fn resource_policy_statements<'a>(
    template: &'a Value,
    policy_type: &str,
    list: &str,
    resource: &str,
) -> Vec<&'a Value> {
    template["Resources"]
        .as_mapping()
        .expect("template.yaml has resources")
        .values()
        .filter(|policy| policy["Type"].as_str() == Some(policy_type))
        .filter(|policy| {
            one_or_many(&policy["Properties"][list])
                .into_iter()
                .any(|target| is_ref(target, resource))
        })
        .flat_map(|policy| statements(&policy["Properties"]["PolicyDocument"]))
        .collect()
}

fn is_deny_to_everyone(statement: &Value) -> bool {
    statement["Effect"].as_str() == Some("Deny") && statement["Principal"].as_str() == Some("*")
}

fn denies_insecure_transport(statement: &Value) -> bool {
    is_deny_to_everyone(statement)
        && statement["Condition"]["Bool"]["aws:SecureTransport"].as_str() == Some("false")
}

fn alarms(template: &Value) -> Vec<(&str, &Value)> {
    let alarms: Vec<_> = template["Resources"]
        .as_mapping()
        .expect("template.yaml has resources")
        .iter()
        .filter(|(_, resource)| resource["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .map(|(name, resource)| {
            (
                name.as_str().expect("a logical id"),
                &resource["Properties"],
            )
        })
        .collect();
    assert!(!alarms.is_empty(), "template.yaml has alarms");
    alarms
}

#[test]
fn both_functions_settle_after_the_slowest_delivery_path() {
    let template = template();
    let settle = settle_minutes(&template, "EvaluateFunction");
    // Ingest calls a row late against the same horizon the evaluator stops reading at.
    assert_eq!(settle_minutes(&template, "IngestFunction"), settle);
    let aggregation_seconds =
        template["Parameters"]["FlowLogMaxAggregationInterval"]["AllowedValues"]
            .as_sequence()
            .expect("FlowLogMaxAggregationInterval has allowed values")
            .iter()
            .map(|value| number(value, "an aggregation interval"))
            .max()
            .expect("at least one aggregation interval");
    let queue = properties(&template, "FlowLogObjectQueue");
    let ingest = properties(&template, "IngestFunction");
    let path = DeliveryPath {
        aggregation_seconds,
        publish_seconds: PUBLISH_ALLOWANCE_SECONDS,
        object_queue_visibility_seconds: number(
            &queue["VisibilityTimeout"],
            "the queue's VisibilityTimeout",
        ),
        object_queue_max_receives: number(
            &queue["RedrivePolicy"]["maxReceiveCount"],
            "the queue's maxReceiveCount",
        ),
        async_max_event_age_seconds: number(
            &ingest["EventInvokeConfig"]["MaximumEventAgeInSeconds"],
            "ingest's MaximumEventAgeInSeconds",
        ),
        ingest_timeout_seconds: number(&ingest["Timeout"], "ingest's Timeout"),
    };
    let required = required_settle_seconds(&path);
    assert!(
        settle * 60 >= required,
        "SETTLE_MINUTES {settle} is shorter than the {required} s the data path needs: {path:?}"
    );
}

#[test]
fn object_queue_invocations_are_neither_throttled_nor_redelivered_while_running() {
    let template = template();
    let visibility = number(
        &properties(&template, "FlowLogObjectQueue")["VisibilityTimeout"],
        "the queue's VisibilityTimeout",
    );
    let timeout = number(
        &properties(&template, "IngestFunction")["Timeout"],
        "ingest's Timeout",
    );
    // Lambda refuses a mapping whose function outlives the queue's visibility timeout.
    assert!(
        visibility >= timeout,
        "visibility timeout {visibility} s < ingest timeout {timeout} s"
    );
    let scaling =
        &properties(&template, "FlowLogObjectEvents")["ScalingConfig"]["MaximumConcurrency"];
    assert!(
        is_ref(scaling, "ObjectQueueMaxConcurrency"),
        "the mapping's MaximumConcurrency is the parameter, found {scaling:?}"
    );
    let queue_concurrency = parameter_default(&template, "ObjectQueueMaxConcurrency");
    let reserved = parameter_default(&template, "IngestReservedConcurrency");
    assert!(
        queue_concurrency < reserved,
        "ObjectQueueMaxConcurrency {queue_concurrency} leaves no room below IngestReservedConcurrency {reserved}"
    );
}

#[test]
fn alert_cooldown_outlasts_the_windows_still_reread() {
    let template = template();
    let cooldown = parameter_default(&template, "AlertCooldownMinutes") * 60;
    let settle = settle_minutes(&template, "EvaluateFunction") * 60;
    let window = parameter_default(&template, "WindowMinutes") * 60;
    assert!(
        cooldown >= settle + window,
        "the default cooldown ({cooldown} s) ends while the alerted window is still read ({settle} + {window} s)"
    );
}

#[test]
fn a_claim_outlives_the_evaluation_that_made_it() {
    let template = template();
    let timeout = number(
        &properties(&template, "EvaluateFunction")["Timeout"],
        "evaluate's Timeout",
    );
    // A claim older than this is taken over by the next run: a run still publishing must
    // not lose its claims.
    assert!(
        evaluate_rejects::CLAIM_TIMEOUT_SECONDS > timeout,
        "claims expire after {} s, an evaluation may run {timeout} s",
        evaluate_rejects::CLAIM_TIMEOUT_SECONDS
    );
}

#[test]
fn no_alarm_publishes_to_the_alert_topic() {
    let template = template();
    for (name, alarm) in alarms(&template) {
        for list in ["AlarmActions", "OKActions", "InsufficientDataActions"] {
            if let Some(actions) = alarm[list].as_sequence() {
                assert!(
                    !actions.iter().any(|action| is_ref(action, "AlertTopic")),
                    "{name} {list} includes the alert topic"
                );
            }
        }
    }
}

#[test]
fn every_alarm_publishes_to_the_operations_topic() {
    let template = template();
    for (name, alarm) in alarms(&template) {
        let actions = alarm["AlarmActions"]
            .as_sequence()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(
            actions
                .iter()
                .any(|action| is_ref(action, "OperationsTopic")),
            "{name} does not notify the operations topic: {actions:?}"
        );
    }
}

#[test]
fn only_the_evaluator_may_publish_to_the_alert_topic() {
    let template = template();
    let policy =
        resource_policy_statements(&template, "AWS::SNS::TopicPolicy", "Topics", "AlertTopic");
    assert!(
        policy.iter().any(|statement| {
            is_deny_to_everyone(statement)
                && actions(statement).contains(&"sns:Publish")
                && ["ArnNotEquals", "StringNotEquals"].iter().any(|operator| {
                    is_get_att(
                        &statement["Condition"][*operator]["aws:PrincipalArn"],
                        "EvaluateFunctionRole.Arn",
                    )
                })
        }),
        "the alert topic's policy denies sns:Publish to every principal but the evaluate role: {policy:?}"
    );
    assert!(
        role_statements(&template, "EvaluateFunctionRole")
            .iter()
            .any(|statement| {
                statement["Effect"].as_str() == Some("Allow")
                    && actions(statement).contains(&"sns:Publish")
                    && is_ref(&statement["Resource"], "AlertTopic")
            }),
        "the evaluate role may publish to the alert topic"
    );
}

#[test]
fn topics_refuse_requests_without_tls() {
    let template = template();
    for topic in ["AlertTopic", "OperationsTopic"] {
        let policy =
            resource_policy_statements(&template, "AWS::SNS::TopicPolicy", "Topics", topic);
        // SNS refuses "sns:*" in a topic policy, so the statement lists the actions.
        let denied: BTreeSet<&str> = policy
            .iter()
            .filter(|statement| {
                denies_insecure_transport(statement) && is_ref(&statement["Resource"], topic)
            })
            .flat_map(|statement| actions(statement))
            .collect();
        for action in [
            "sns:Publish",
            "sns:Subscribe",
            "sns:SetTopicAttributes",
            "sns:DeleteTopic",
        ] {
            assert!(
                denied.contains(action),
                "{topic}'s policy does not deny {action} without TLS: {policy:?}"
            );
        }
    }
}

#[test]
fn operations_topic_takes_alarms_of_this_account_only() {
    let template = template();
    let policy = resource_policy_statements(
        &template,
        "AWS::SNS::TopicPolicy",
        "Topics",
        "OperationsTopic",
    );
    assert!(
        policy.iter().any(|statement| {
            statement["Effect"].as_str() == Some("Allow")
                && statement["Principal"]["Service"].as_str() == Some("cloudwatch.amazonaws.com")
                && actions(statement) == ["sns:Publish"]
                && is_ref(
                    &statement["Condition"]["StringEquals"]["aws:SourceAccount"],
                    "AWS::AccountId",
                )
                && reference(&statement["Condition"]["ArnLike"]["aws:SourceArn"])
                    .is_some_and(|(tag, _)| tag == "Sub")
        }),
        "CloudWatch may publish to the operations topic for this account's alarms: {policy:?}"
    );
}

#[test]
fn queues_refuse_requests_without_tls() {
    let template = template();
    for queue in ["FlowLogObjectQueue", "DeadLetterQueue"] {
        let policy =
            resource_policy_statements(&template, "AWS::SQS::QueuePolicy", "Queues", queue);
        assert!(
            policy.iter().any(|statement| {
                denies_insecure_transport(statement)
                    && actions(statement) == ["sqs:*"]
                    && is_get_att(&statement["Resource"], &format!("{queue}.Arn"))
            }),
            "{queue} does not deny sqs:* without TLS: {policy:?}"
        );
    }
}

#[test]
fn ingest_may_list_the_flow_log_bucket() {
    // Without s3:ListBucket, GetObject of an object deleted since its notification is a
    // 403 instead of the 404 ingest skips, and the message ends in the dead-letter queue.
    let template = template();
    assert!(
        role_statements(&template, "IngestFunctionRole")
            .iter()
            .any(|statement| {
                statement["Effect"].as_str() == Some("Allow")
                    && actions(statement).contains(&"s3:ListBucket")
                    && is_get_att(&statement["Resource"], "FlowLogBucket.Arn")
            }),
        "the ingest role has s3:ListBucket on the flow-log bucket"
    );
}

#[test]
fn ingest_cannot_change_message_visibility() {
    let template = template();
    for statement in role_statements(&template, "IngestFunctionRole") {
        let actions = actions(statement);
        assert!(
            !actions
                .iter()
                .any(|action| ["sqs:ChangeMessageVisibility", "sqs:*", "*"].contains(action)),
            "the ingest role may change message visibility: {actions:?}"
        );
    }
}

#[test]
fn late_rows_alarm_watches_every_trigger_of_the_metric_ingest_emits() {
    let template = template();
    let alarm = properties(&template, "LateRowsAlarm");
    assert!(is_ref(&alarm["AlarmActions"][0], "OperationsTopic"));
    assert_eq!(
        alarm["ComparisonOperator"].as_str(),
        Some("GreaterThanThreshold")
    );
    assert_eq!(number(&alarm["Threshold"], "the threshold"), 0);
    let queries = alarm["Metrics"]
        .as_sequence()
        .expect("the alarm is on metric math");
    let mut triggers = BTreeSet::new();
    for query in queries
        .iter()
        .filter(|query| query["MetricStat"].is_mapping())
    {
        let stat = &query["MetricStat"];
        assert_eq!(stat["Stat"].as_str(), Some("Sum"));
        assert_eq!(number(&stat["Period"], "the period"), 300);
        let metric = &stat["Metric"];
        assert_eq!(
            metric["Namespace"].as_str(),
            Some(rejectwatch_core::metrics::NAMESPACE)
        );
        assert_eq!(metric["MetricName"].as_str(), Some("LateRows"));
        let dimension = |name: &str| {
            metric["Dimensions"]
                .as_sequence()
                .expect("the metric has dimensions")
                .iter()
                .find(|dimension| dimension["Name"].as_str() == Some(name))
                .and_then(|dimension| dimension["Value"].as_str())
                .unwrap_or_else(|| panic!("a {name} dimension"))
                .to_owned()
        };
        // The dimensions ingest's metric line carries, with the function's own name.
        let line: serde_json::Value = serde_json::from_str(
            &ingest_flow_logs::Summary {
                trigger: "sqs",
                ..Default::default()
            }
            .metrics_line(0),
        )
        .expect("the metric line is JSON");
        assert_eq!(dimension("Function"), line["Function"].as_str().unwrap());
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert!(
            directive["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|metric| metric["Name"] == "LateRows"),
            "ingest's metric line has no LateRows: {line}"
        );
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["Function", "Trigger"]])
        );
        triggers.insert(dimension("Trigger"));
    }
    assert_eq!(
        triggers,
        BTreeSet::from(["cloudwatch".to_owned(), "s3".to_owned(), "sqs".to_owned()])
    );
    let sums: Vec<_> = queries
        .iter()
        .filter(|query| query["ReturnData"].as_bool() == Some(true))
        .collect();
    assert_eq!(sums.len(), 1, "one query decides the alarm");
    assert_eq!(
        sums[0]["Expression"].as_str(),
        Some("SUM(FILL(METRICS(), 0))")
    );
}

/// With both destinations, only the counted path may invoke ingest: the other would take
/// the concurrency the object queue is sized against, only to be skipped.
#[test]
fn only_the_counted_path_invokes_ingest() {
    let template = template();
    let resources = &template["Resources"];
    let conditions = &template["Conditions"];
    let condition_of = |resource: &str| {
        resources[resource]["Condition"]
            .as_str()
            .unwrap_or_else(|| panic!("{resource} has a condition"))
            .to_owned()
    };
    let requires = |condition: &str, needed: &str| {
        let text = serde_yaml_ng::to_string(&conditions[condition]).unwrap();
        assert!(
            text.contains(needed),
            "condition {condition} does not require {needed}: {text}"
        );
    };
    for resource in ["FlowLogSubscription", "FlowLogSubscriptionPermission"] {
        requires(&condition_of(resource), "CountCloudWatch");
    }
    requires(&condition_of("FlowLogObjectEvents"), "CountS3");
    let notifications = serde_yaml_ng::to_string(
        &resources["FlowLogBucket"]["Properties"]["NotificationConfiguration"],
    )
    .unwrap();
    assert!(notifications.contains("ConsumeObjects"), "{notifications}");
    requires("ConsumeObjects", "CountS3");
}

#[test]
fn the_s3_flow_log_file_format_is_a_parameter_ingest_reads_either_way() {
    let template = template();
    let options = &properties(&template, "S3FlowLog")["DestinationOptions"];
    assert!(is_ref(&options["FileFormat"], "FlowLogFileFormat"));
    let parameter = &template["Parameters"]["FlowLogFileFormat"];
    assert_eq!(parameter["Default"].as_str(), Some("plain-text"));
    let allowed: Vec<&str> = parameter["AllowedValues"]
        .as_sequence()
        .expect("AllowedValues")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(allowed, ["plain-text", "parquet"]);
}
