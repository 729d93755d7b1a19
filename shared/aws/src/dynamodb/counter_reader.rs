//! The counter reader (`impl CounterReader`) and the CLI's queries: a window's rows from
//! every shard of the `by-window` index, a source's windows, a window's capture gaps.

use std::collections::HashMap;
use std::net::IpAddr;

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::{StreamExt, TryStreamExt, stream};

use rejectwatch_core::counters::{GapUpdate, StoredCounter};
use rejectwatch_core::ports::{CounterReader, StoreError};

use super::DynamoCounterStore;
use super::item::{counter_from_item, number};
use super::schema::*;

impl DynamoCounterStore {
    /// Every item `request` matches, page after page; `reading` says what for, in an error.
    async fn query_all(
        &self,
        request: QueryFluentBuilder,
        reading: impl FnOnce() -> String,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        request
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|error| self.error(reading(), error))
    }

    /// The rows of one window with at least `min_rejects` REJECTs, from every shard of
    /// the `by-window` index: a `Query` per shard, never a scan.
    pub async fn window_counters(
        &self,
        window_start: u64,
        shards: u8,
        min_rejects: u64,
    ) -> Result<Vec<StoredCounter>, StoreError> {
        // The shards are independent partitions: queried at once, a slow or retried one
        // does not hold up the others.
        let shard_rows: Vec<Vec<StoredCounter>> = stream::iter(0..shards.max(1))
            .map(|shard| async move {
                let request = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(BY_WINDOW_INDEX)
                    .key_condition_expression("#g = :g AND #r >= :min")
                    .expression_attribute_names("#g", GSI1_PK)
                    .expression_attribute_names("#r", REJECTS)
                    .expression_attribute_values(
                        ":g",
                        AttributeValue::S(window_shard_key(window_start, shard)),
                    )
                    .expression_attribute_values(":min", number(min_rejects));
                let reading = || format!("reading window {window_start} shard {shard}");
                let items = self.query_all(request, reading).await?;
                Ok::<_, StoreError>(items.iter().filter_map(counter_from_item).collect())
            })
            .buffer_unordered(usize::from(shards.max(1)))
            .try_collect()
            .await?;
        Ok(shard_rows.into_iter().flatten().collect())
    }

    /// The rows of one window with the most REJECTs, most first: each shard's top `limit`
    /// merged (the index is sorted by `rejects`), or every row when `limit` is `None`.
    pub async fn top_in_window(
        &self,
        window_start: u64,
        limit: Option<usize>,
    ) -> Result<Vec<StoredCounter>, StoreError> {
        let mut rows = match limit {
            None => {
                DynamoCounterStore::window_counters(self, window_start, self.index_shards, 0)
                    .await?
            }
            Some(limit) => {
                let mut rows = Vec::new();
                for shard in 0..self.index_shards {
                    let output = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .index_name(BY_WINDOW_INDEX)
                        .key_condition_expression("#g = :g")
                        .expression_attribute_names("#g", GSI1_PK)
                        .expression_attribute_values(
                            ":g",
                            AttributeValue::S(window_shard_key(window_start, shard)),
                        )
                        .scan_index_forward(false)
                        .limit(limit.clamp(1, 1000) as i32)
                        .send()
                        .await
                        .map_err(|error| {
                            self.error(
                                format!("reading window {window_start} shard {shard}"),
                                error,
                            )
                        })?;
                    rows.extend(
                        output
                            .items
                            .unwrap_or_default()
                            .iter()
                            .filter_map(counter_from_item),
                    );
                }
                rows
            }
        };
        rows.sort_by(|a, b| b.rejects.cmp(&a.rejects).then(a.source.cmp(&b.source)));
        if let Some(limit) = limit {
            rows.truncate(limit);
        }
        Ok(rows)
    }

    /// One source's rows with windows starting in `from..=to`.
    pub async fn source_counters(
        &self,
        source: IpAddr,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredCounter>, StoreError> {
        let request = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", AttributeValue::S(source_key(source)))
            .expression_attribute_values(":from", AttributeValue::S(window_key(from)))
            .expression_attribute_values(":to", AttributeValue::S(window_key(to)));
        let items = self
            .query_all(request, || format!("reading counters of {source}"))
            .await?;
        Ok(items.iter().filter_map(counter_from_item).collect())
    }
}

impl CounterReader for DynamoCounterStore {
    async fn window_counters(
        &self,
        window_start: u64,
        min_rejects: u64,
    ) -> Result<Vec<StoredCounter>, StoreError> {
        DynamoCounterStore::window_counters(self, window_start, self.index_shards, min_rejects)
            .await
    }

    async fn source_counters(
        &self,
        source: IpAddr,
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredCounter>, StoreError> {
        DynamoCounterStore::source_counters(self, source, from, to).await
    }

    async fn window_gaps(&self, window_start: u64) -> Result<Vec<GapUpdate>, StoreError> {
        let number_of = |item: &HashMap<String, AttributeValue>, name: &str| {
            item.get(name)
                .and_then(|value| value.as_n().ok())
                .and_then(|text| text.parse().ok())
                .unwrap_or(0)
        };
        let shard_gaps: Vec<Vec<GapUpdate>> = stream::iter(0..self.index_shards)
            .map(|shard| async move {
                let request = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("#pk = :pk")
                    .expression_attribute_names("#pk", PK)
                    .expression_attribute_values(
                        ":pk",
                        AttributeValue::S(gap_key(window_start, shard)),
                    );
                let reading =
                    || format!("reading capture gaps of window {window_start} shard {shard}");
                let items = self.query_all(request, reading).await?;
                Ok::<_, StoreError>(
                    items
                        .iter()
                        .filter_map(|item| {
                            Some(GapUpdate {
                                interface: item.get(INTERFACE)?.as_s().ok()?.clone(),
                                window_start,
                                shard,
                                nodata: number_of(item, NODATA),
                                skipdata: number_of(item, SKIPDATA),
                            })
                        })
                        .collect(),
                )
            })
            .buffer_unordered(usize::from(self.index_shards.max(1)))
            .try_collect()
            .await?;
        Ok(shard_gaps.into_iter().flatten().collect())
    }
}

/// The reads' requests, pinned: the index, key conditions, placeholders and values, and
/// that every page and every shard is read.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::operation::query::{QueryInput, QueryOutput};
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_smithy_mocks::mock;
    use rejectwatch_core::ports::CounterReader;

    use super::super::test_support::{TABLE, record_if, sent, store_matching};

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_owned())
    }

    fn n(value: u64) -> AttributeValue {
        AttributeValue::N(value.to_string())
    }

    fn item(attributes: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        attributes
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect()
    }

    const WINDOW: u64 = 1_714_566_000;

    fn counter(source: &str, rejects: u64) -> HashMap<String, AttributeValue> {
        item(&[
            ("pk", s(&format!("SRC#{source}"))),
            ("sk", s("WIN#1714566000")),
            ("gsi1pk", s("WIN#1714566000#00")),
            ("source", s(source)),
            ("window_start", n(WINDOW)),
            ("window_seconds", n(300)),
            ("rejects", n(rejects)),
        ])
    }

    fn shard_of(input: &QueryInput) -> Option<&str> {
        input
            .expression_attribute_values()?
            .get(":g")?
            .as_s()
            .ok()
            .map(String::as_str)
    }

    fn window_query(shard: &str, start: Option<HashMap<String, AttributeValue>>) -> QueryInput {
        QueryInput::builder()
            .table_name(TABLE)
            .index_name("by-window")
            .key_condition_expression("#g = :g AND #r >= :min")
            .expression_attribute_names("#g", "gsi1pk")
            .expression_attribute_names("#r", "rejects")
            .expression_attribute_values(":g", s(shard))
            .expression_attribute_values(":min", n(5))
            .set_exclusive_start_key(start)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn window_counters_queries_every_shard_of_the_index_page_by_page() {
        let next_page = item(&[
            ("pk", s("SRC#198.51.100.1")),
            ("sk", s("WIN#1714566000")),
            ("gsi1pk", s("WIN#1714566000#00")),
            ("rejects", n(9)),
        ]);
        let start = next_page.clone();
        let (first, matcher) = record_if(|input: &QueryInput| {
            shard_of(input) == Some("WIN#1714566000#00") && input.exclusive_start_key().is_none()
        });
        let first_page = mock!(Client::query)
            .match_requests(matcher)
            .then_output(move || {
                QueryOutput::builder()
                    .items(counter("198.51.100.1", 9))
                    .set_last_evaluated_key(Some(next_page.clone()))
                    .build()
            });
        let (second, matcher) = record_if(move |input: &QueryInput| {
            shard_of(input) == Some("WIN#1714566000#00")
                && input.exclusive_start_key() == Some(&start)
        });
        let second_page = mock!(Client::query)
            .match_requests(matcher)
            .then_output(|| {
                QueryOutput::builder()
                    .items(counter("198.51.100.2", 7))
                    .build()
            });
        let (other, matcher) =
            record_if(|input: &QueryInput| shard_of(input) == Some("WIN#1714566000#01"));
        let other_shard = mock!(Client::query)
            .match_requests(matcher)
            .then_output(|| {
                QueryOutput::builder()
                    .items(counter("203.0.113.9", 5))
                    // Not a counter: left out.
                    .items(item(&[
                        ("pk", s("GAP#1714566000#01")),
                        ("sk", s("ENI#eni-1")),
                    ]))
                    .build()
            });
        // The store reads two shards per window (see `test_support::store`).
        let store = store_matching(&[&first_page, &second_page, &other_shard]);

        let mut rows = CounterReader::window_counters(&store, WINDOW, 5)
            .await
            .unwrap();
        rows.sort_by_key(|row| row.rejects);
        let found: Vec<_> = rows
            .iter()
            .map(|row| {
                (
                    row.source.unwrap().to_string(),
                    row.rejects,
                    row.window_start,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("203.0.113.9".to_owned(), 5, WINDOW),
                ("198.51.100.2".to_owned(), 7, WINDOW),
                ("198.51.100.1".to_owned(), 9, WINDOW),
            ]
        );
        assert_eq!(sent(&first), [window_query("WIN#1714566000#00", None)]);
        assert_eq!(
            sent(&second),
            [window_query(
                "WIN#1714566000#00",
                Some(item(&[
                    ("pk", s("SRC#198.51.100.1")),
                    ("sk", s("WIN#1714566000")),
                    ("gsi1pk", s("WIN#1714566000#00")),
                    ("rejects", n(9)),
                ]))
            )]
        );
        assert_eq!(sent(&other), [window_query("WIN#1714566000#01", None)]);
    }
}
