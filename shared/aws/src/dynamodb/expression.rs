//! The `UpdateExpression` builder: `SET`/`ADD` clauses and conditions with placeholders for
//! every attribute name and value.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use rejectwatch_core::counters::EXACT_VALUES;

use super::item::{number, numbers};
use super::schema::OVER_MARKER;

/// Builds `SET a = :a, ... ADD b :b, ...` with placeholders for every name and value, so no
/// attribute name (some are reserved words, some come from log data) is ever spliced in.
#[derive(Default)]
pub(super) struct UpdateExpression {
    sets: Vec<String>,
    adds: Vec<String>,
    /// Conditions, all of which must hold.
    pub(super) conditions: Vec<String>,
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

impl UpdateExpression {
    fn name(&mut self, attribute: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, name)| *name == attribute) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), attribute.to_owned());
        placeholder
    }

    fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    pub(super) fn set(&mut self, attribute: &str, value: AttributeValue) {
        let clause = format!("{} = {}", self.name(attribute), self.value(value));
        self.sets.push(clause);
    }

    /// `SET a = if_not_exists(a, :v)`: the first writer's value stays. Empty sets, which
    /// DynamoDB refuses, are left out.
    pub(super) fn set_if_absent(&mut self, attribute: &str, members: AttributeValue) {
        if is_empty_set(&members) {
            return;
        }
        let name = self.name(attribute);
        let clause = format!("{name} = if_not_exists({name}, {})", self.value(members));
        self.sets.push(clause);
    }

    pub(super) fn add(&mut self, attribute: &str, value: AttributeValue) {
        let clause = format!("{} {}", self.name(attribute), self.value(value));
        self.adds.push(clause);
    }

    /// Adds set members; DynamoDB refuses empty sets, so empty ones are left out.
    pub(super) fn add_set(&mut self, attribute: &str, members: AttributeValue) {
        if !is_empty_set(&members) {
            self.add(attribute, members);
        }
    }

    /// Adds a delivery's exact values to a value set on the condition that it keeps at
    /// most [`EXACT_VALUES`] members, or (`None`) marks the set over.
    pub(super) fn add_exact_values(&mut self, attribute: &str, values: &Option<Vec<u64>>) {
        match values {
            Some(values) if values.is_empty() => {}
            Some(values) => {
                let room = EXACT_VALUES.saturating_sub(values.len()) as u64;
                let name = self.name(attribute);
                let room = self.value(number(room));
                self.conditions.push(format!(
                    "(attribute_not_exists({name}) OR size({name}) <= {room})"
                ));
                self.add(attribute, numbers(values.iter().copied()));
            }
            None => self.add(attribute, AttributeValue::Ns(vec![OVER_MARKER.to_owned()])),
        }
    }

    pub(super) fn condition(&self) -> Option<String> {
        (!self.conditions.is_empty()).then(|| self.conditions.join(" AND "))
    }

    pub(super) fn render(&self) -> String {
        let mut expression = String::new();
        if !self.sets.is_empty() {
            expression.push_str("SET ");
            expression.push_str(&self.sets.join(", "));
        }
        if !self.adds.is_empty() {
            if !expression.is_empty() {
                expression.push(' ');
            }
            expression.push_str("ADD ");
            expression.push_str(&self.adds.join(", "));
        }
        expression
    }
}

fn is_empty_set(value: &AttributeValue) -> bool {
    match value {
        AttributeValue::Ns(members) | AttributeValue::Ss(members) => members.is_empty(),
        _ => false,
    }
}
