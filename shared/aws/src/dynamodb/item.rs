//! Item mapping: domain types from DynamoDB items (counters, alert state, value sets) and
//! the attribute values the requests carry.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use rejectwatch_core::alert::AlertState;
use rejectwatch_core::counters::{ExactValues, StoredCounter};

use super::schema::*;

/// Reads a counter item; `None` for items that are not counters.
pub fn counter_from_item(item: &HashMap<String, AttributeValue>) -> Option<StoredCounter> {
    if !item.get(PK)?.as_s().ok()?.starts_with(SOURCE_PREFIX) {
        return None;
    }
    let number_of = |name: &str| -> u64 {
        item.get(name)
            .and_then(|value| value.as_n().ok())
            .and_then(|text| text.parse().ok())
            .unwrap_or(0)
    };
    let numbers_of = |name: &str| -> Vec<u64> {
        let mut values: Vec<u64> = item
            .get(name)
            .and_then(|value| value.as_ns().ok())
            .map(|members| {
                members
                    .iter()
                    .filter_map(|text| text.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        values.sort_unstable();
        values
    };
    let small_numbers_of = |name: &str| -> Vec<u16> {
        numbers_of(name)
            .into_iter()
            .filter_map(|value| u16::try_from(value).ok())
            .collect()
    };
    let mut protocols = Vec::new();
    let mut reject_reasons = Vec::new();
    for (name, value) in item {
        let count = value.as_n().ok().and_then(|text| text.parse::<u64>().ok());
        if let (Some(protocol), Some(count)) = (name.strip_prefix(PROTOCOL_PREFIX), count)
            && let Ok(protocol) = protocol.parse::<u8>()
        {
            protocols.push((protocol, count));
        } else if let (Some(reason), Some(count)) = (name.strip_prefix(REASON_PREFIX), count) {
            reject_reasons.push((reason.to_owned(), count));
        }
    }
    protocols.sort_unstable();
    reject_reasons.sort();
    let mut interfaces: Vec<String> = item
        .get(INTERFACES)
        .and_then(|value| value.as_ss().ok())
        .cloned()
        .unwrap_or_default();
    interfaces.sort();
    Some(StoredCounter {
        source: item.get(SOURCE)?.as_s().ok()?.parse().ok(),
        window_start: number_of(WINDOW_START),
        window_seconds: number_of(WINDOW_SECONDS),
        rejects: number_of(REJECTS),
        packets: number_of(PACKETS),
        bytes: number_of(BYTES),
        port_sketch: small_numbers_of(PORT_SKETCH),
        host_sketch: small_numbers_of(HOST_SKETCH),
        exact_ports: exact_values_of(item, PORT_VALUES, |v| u16::try_from(v).ok()),
        exact_hosts: exact_values_of(item, HOST_VALUES, Some),
        sample_ports: small_numbers_of(SAMPLE_PORTS),
        sample_hosts: numbers_of(SAMPLE_HOSTS),
        first_seen: numbers_of(FIRST_SEEN),
        last_seen: numbers_of(LAST_SEEN),
        interfaces,
        protocols,
        reject_reasons,
    })
}

/// A stored value set: its values, and whether it holds [`OVER_MARKER`] (or anything that is
/// not a value, which no release writes).
pub(super) fn exact_values_of<T: Ord>(
    item: &HashMap<String, AttributeValue>,
    name: &str,
    value_of: impl Fn(u64) -> Option<T>,
) -> ExactValues<T> {
    let mut exact = ExactValues::default();
    let members = item.get(name).and_then(|value| value.as_ns().ok());
    for member in members.into_iter().flatten() {
        match member.parse().ok().and_then(&value_of) {
            Some(value) => exact.values.push(value),
            None => exact.over = true,
        }
    }
    if exact.over {
        exact.values.clear();
    }
    exact.values.sort_unstable();
    exact
}

/// How long claims written by releases before `held_until` held.
const LEGACY_CLAIM_SECONDS: u64 = 300;

/// The alert state in an item; attributes written by older releases default as they
/// did then (no `held_until`: the evaluation time and the old fixed timeout stand in).
pub(super) fn alert_state_from_item(item: &HashMap<String, AttributeValue>) -> AlertState {
    let number_of = |name: &str| {
        item.get(name)
            .and_then(|value| value.as_n().ok())
            .and_then(|text| text.parse::<u64>().ok())
    };
    let claimed_at = number_of(CLAIMED_AT).unwrap_or(0);
    AlertState {
        level: number_of(LEVEL).map_or(0, |level| level.min(u64::from(u8::MAX)) as u8),
        claimed_at,
        held_until: number_of(HELD_UNTIL).unwrap_or(claimed_at + LEGACY_CLAIM_SECONDS),
        published: item
            .get(PUBLISHED)
            .and_then(|value| value.as_bool().ok())
            .copied()
            .unwrap_or(false),
    }
}

pub(super) fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn numbers(values: impl IntoIterator<Item = u64>) -> AttributeValue {
    let mut members: Vec<String> = values.into_iter().map(|value| value.to_string()).collect();
    members.sort();
    members.dedup();
    AttributeValue::Ns(members)
}

pub(super) fn strings(values: impl IntoIterator<Item = String>) -> AttributeValue {
    let mut members: Vec<String> = values.into_iter().collect();
    members.sort();
    members.dedup();
    AttributeValue::Ss(members)
}
