//! The evaluator's state: per-source alert claims (`impl AlertStateStore`), its progress
//! mark (`impl EvaluationProgress`) and the digest records (`impl DigestLog`).

use std::net::IpAddr;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use rejectwatch_core::alert::{ClaimDecision, cooldown_cutoff, decide_claim};
use rejectwatch_core::ports::{
    AlertStateStore, Claim, ClaimOutcome, DigestLog, EvaluationProgress, StoreError,
};

use super::DynamoCounterStore;
use super::item::{alert_state_from_item, number};
use super::schema::*;

impl AlertStateStore for DynamoCounterStore {
    async fn claim(
        &self,
        source: IpAddr,
        level: u8,
        activity_end: u64,
        claim: &Claim,
    ) -> Result<ClaimOutcome, StoreError> {
        // The `Claim` branches of `alert::decide_claim`, evaluated atomically by DynamoDB:
        // no state (or a first claim given back, level 0), or a published alert past its
        // cooldown for this activity (no cutoff: -1, which no `claimed_at` is below) or
        // at a lower level. The
        // values before the claim are kept (right-hand sides read the item as it was), so
        // that a release can put them back. The other branches (a retry of this run, an
        // abandoned claim) are decided below from the item the failed condition returns.
        let cutoff = cooldown_cutoff(claim.now, activity_end, claim.cooldown_seconds)
            .map_or_else(|| "-1".to_owned(), |cutoff| cutoff.to_string());
        let result = self
            .update_alert_state(
                source,
                "SET #prev_level = if_not_exists(#level, :zero), \
                 #prev_claimed = if_not_exists(#claimed, :zero), \
                 #prev_held = if_not_exists(#held, :zero), \
                 #prev_published = if_not_exists(#published, :false), \
                 #source = :source, #level = :level, #claimed = :now, #held = :held, \
                 #published = :false, #claim = :run, #expires = :expires",
                "attribute_not_exists(#pk) \
                 OR (#published = :false AND #level = :zero) \
                 OR (#published = :true AND (#claimed <= :cooldown_cutoff OR #level < :level))",
                [
                    (":source", AttributeValue::S(source.to_string())),
                    (":zero", number(0)),
                    (":false", AttributeValue::Bool(false)),
                    (":true", AttributeValue::Bool(true)),
                    (":cooldown_cutoff", AttributeValue::N(cutoff)),
                ]
                .into_iter()
                .chain(claim_values(level, claim)),
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let held = match result {
            Ok(_) => return Ok(ClaimOutcome::Won),
            Err(SdkError::ServiceError(error))
                if error.err().is_conditional_check_failed_exception() =>
            {
                match error.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(failed) => failed.item,
                    _ => None,
                }
            }
            Err(error) => {
                return Err(self.error(format!("claiming the alert state of {source}"), error));
            }
        };
        let Some(held) = held else {
            // The condition failed on an item that is gone now: try once more later.
            return Ok(ClaimOutcome::ClaimedElsewhere);
        };
        let holder = held
            .get(CLAIM_ID)
            .and_then(|value| value.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let state = alert_state_from_item(&held);
        let held_by_this_run = !state.published && holder == claim.run_id;
        match decide_claim(Some(state), held_by_this_run, level, activity_end, claim) {
            ClaimDecision::Claim if held_by_this_run => self.reclaim(source, level, claim).await,
            // The item changed between the write and its check: another run's doing.
            ClaimDecision::Claim | ClaimDecision::HeldElsewhere => {
                Ok(ClaimOutcome::ClaimedElsewhere)
            }
            ClaimDecision::Cooldown => Ok(ClaimOutcome::Cooldown),
            ClaimDecision::Abandoned => Ok(ClaimOutcome::Abandoned { holder }),
        }
    }

    async fn take_over(
        &self,
        source: IpAddr,
        level: u8,
        claim: &Claim,
        holder: &str,
    ) -> Result<ClaimOutcome, StoreError> {
        // The previous_* values stay as they are: the state from before the abandoned
        // claim, which a release of this claim puts back.
        let result = self
            .update_alert_state(
                source,
                "SET #level = :level, #claimed = :now, #held = :held, #claim = :run, \
                 #expires = :expires",
                // The holder's claim only while it is still past its `held_until` (its own
                // retry may have taken it up again); this run's own claim too: an attempt
                // that was applied but whose answer was lost is retried by the SDK, and
                // must not read as another run's success.
                "#published = :false \
                 AND ((#claim = :holder AND #held <= :wall_now) OR #claim = :run)",
                [
                    (":wall_now", number(claim.wall_now)),
                    (":holder", AttributeValue::S(holder.to_owned())),
                    (":false", AttributeValue::Bool(false)),
                ]
                .into_iter()
                .chain(claim_values(level, claim)),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimOutcome::Won),
            Err(SdkError::ServiceError(error))
                if error.err().is_conditional_check_failed_exception() =>
            {
                Ok(ClaimOutcome::ClaimedElsewhere)
            }
            Err(error) => Err(self.error(
                format!("taking over the alert state of {source} from run {holder}"),
                error,
            )),
        }
    }

    async fn confirm(&self, source: IpAddr, run_id: &str) -> Result<(), StoreError> {
        self.on_own_claim(
            source,
            run_id,
            "SET #published = :true",
            &[(":true", AttributeValue::Bool(true))],
            "confirming",
        )
        .await
    }

    async fn release(&self, source: IpAddr, claim: &Claim) -> Result<(), StoreError> {
        self.on_own_claim(
            source,
            &claim.run_id,
            // `if_not_exists` covers claims written before the previous values were kept.
            "SET #level = if_not_exists(#prev_level, :zero), \
             #claimed = if_not_exists(#prev_claimed, :zero), \
             #held = if_not_exists(#prev_held, :zero), \
             #published = if_not_exists(#prev_published, :false)",
            &[(":zero", number(0))],
            "releasing",
        )
        .await
    }
}

impl EvaluationProgress for DynamoCounterStore {
    async fn evaluated_through(&self) -> Result<Option<u64>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(PROGRESS_KEY.into()))
            .key(SK, AttributeValue::S(PROGRESS_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| self.error("reading the evaluator's progress".into(), error))?;
        Ok(output
            .item
            .as_ref()
            .and_then(|item| item.get(WINDOW_START))
            .and_then(|value| value.as_n().ok())
            .and_then(|text| text.parse().ok()))
    }

    async fn mark_evaluated_through(&self, window_start: u64) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(PROGRESS_KEY.into()))
            .key(SK, AttributeValue::S(PROGRESS_SK.into()))
            .update_expression("SET #window = :window")
            .condition_expression("attribute_not_exists(#window) OR #window < :window")
            .expression_attribute_names("#window", WINDOW_START)
            .expression_attribute_values(":window", number(window_start))
            .send()
            .await;
        match result {
            // A concurrent run recorded a later window already: nothing to move.
            Err(SdkError::ServiceError(error))
                if error.err().is_conditional_check_failed_exception() =>
            {
                Ok(())
            }
            Err(error) => Err(self.error("recording the evaluator's progress".into(), error)),
            Ok(_) => Ok(()),
        }
    }
}

impl DigestLog for DynamoCounterStore {
    async fn is_published(&self, run_id: &str) -> Result<bool, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(digest_key(run_id)))
            .key(SK, AttributeValue::S(DIGEST_SK.into()))
            .projection_expression("#pk")
            .expression_attribute_names("#pk", PK)
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| {
                self.error(format!("reading the digest record of run {run_id}"), error)
            })?;
        Ok(output.item.is_some())
    }

    async fn record_published(
        &self,
        run_id: &str,
        source_count: u64,
        published_at: u64,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, AttributeValue::S(digest_key(run_id)))
            .item(SK, AttributeValue::S(DIGEST_SK.into()))
            .item(SOURCE_COUNT, number(source_count))
            .item(PUBLISHED_AT, number(published_at))
            .item(EXPIRES_AT, number(expires_at))
            .send()
            .await
            .map_err(|error| self.error(format!("recording the digest of run {run_id}"), error))?;
        Ok(())
    }
}

/// The placeholders of the alert state's attributes, for every request on it: each request
/// names those its expressions use (DynamoDB refuses names a request does not use).
const STATE_NAMES: [(&str, &str); 12] = [
    ("#pk", PK),
    ("#source", SOURCE),
    ("#level", LEVEL),
    ("#claimed", CLAIMED_AT),
    ("#held", HELD_UNTIL),
    ("#published", PUBLISHED),
    ("#claim", CLAIM_ID),
    ("#expires", EXPIRES_AT),
    ("#prev_level", PREVIOUS_LEVEL),
    ("#prev_claimed", PREVIOUS_CLAIMED_AT),
    ("#prev_held", PREVIOUS_HELD_UNTIL),
    ("#prev_published", PREVIOUS_PUBLISHED),
];

/// Whether `expression` uses `placeholder` itself (`#claim`, not only `#claimed`).
fn uses(expression: &str, placeholder: &str) -> bool {
    expression.match_indices(placeholder).any(|(at, _)| {
        !expression[at + placeholder.len()..]
            .starts_with(|next: char| next.is_ascii_alphanumeric() || next == '_')
    })
}

/// The values a claim writes: its level, times, run and expiry.
fn claim_values(level: u8, claim: &Claim) -> [(&'static str, AttributeValue); 5] {
    [
        (":level", number(u64::from(level))),
        (":now", number(claim.now)),
        (":held", number(claim.held_until)),
        (":run", AttributeValue::S(claim.run_id.clone())),
        (":expires", number(claim.expires_at)),
    ]
}

impl DynamoCounterStore {
    /// A conditional `UpdateItem` of `source`'s alert state, naming the attributes its
    /// expressions use, with `values` for their value placeholders.
    fn update_alert_state<'a>(
        &self,
        source: IpAddr,
        update_expression: &str,
        condition_expression: &str,
        values: impl IntoIterator<Item = (&'a str, AttributeValue)>,
    ) -> UpdateItemFluentBuilder {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(alert_key(source)))
            .key(SK, AttributeValue::S(STATE_SK.into()))
            .update_expression(update_expression)
            .condition_expression(condition_expression);
        for (placeholder, name) in STATE_NAMES {
            if uses(update_expression, placeholder) || uses(condition_expression, placeholder) {
                request = request.expression_attribute_names(placeholder, name);
            }
        }
        for (placeholder, value) in values {
            request = request.expression_attribute_values(placeholder, value);
        }
        request
    }

    /// A retry of the run that holds an unpublished claim (Lambda keeps the request id):
    /// it takes the claim up again, keeping the state from before the first attempt.
    async fn reclaim(
        &self,
        source: IpAddr,
        level: u8,
        claim: &Claim,
    ) -> Result<ClaimOutcome, StoreError> {
        let result = self
            .update_alert_state(
                source,
                "SET #level = :level, #claimed = :now, #held = :held, #expires = :expires",
                "#claim = :run AND #published = :false",
                [(":false", AttributeValue::Bool(false))]
                    .into_iter()
                    .chain(claim_values(level, claim)),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimOutcome::Won),
            // Taken over or published meanwhile.
            Err(SdkError::ServiceError(error))
                if error.err().is_conditional_check_failed_exception() =>
            {
                Ok(ClaimOutcome::ClaimedElsewhere)
            }
            Err(error) => {
                Err(self.error(format!("re-claiming the alert state of {source}"), error))
            }
        }
    }

    /// Updates alert state that run `run_id` claimed and has not published; a claim
    /// another run took over meanwhile is left alone.
    async fn on_own_claim(
        &self,
        source: IpAddr,
        run_id: &str,
        update_expression: &str,
        values: &[(&str, AttributeValue)],
        action: &str,
    ) -> Result<(), StoreError> {
        let request = self.update_alert_state(
            source,
            update_expression,
            "#claim = :run AND #published = :false",
            [
                (":run", AttributeValue::S(run_id.to_owned())),
                (":false", AttributeValue::Bool(false)),
            ]
            .into_iter()
            .chain(
                values
                    .iter()
                    .map(|(placeholder, value)| (*placeholder, value.clone())),
            ),
        );
        match request.send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(error))
                if error.err().is_conditional_check_failed_exception() =>
            {
                Ok(())
            }
            Err(error) => Err(self.error(format!("{action} the alert state of {source}"), error)),
        }
    }
}

/// The requests of the evaluator's state, pinned: keys, expressions, placeholders and
/// values exactly, and what each conditional failure comes to.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::operation::get_item::{GetItemInput, GetItemOutput};
    use aws_sdk_dynamodb::operation::put_item::{PutItemInput, PutItemOutput};
    use aws_sdk_dynamodb::operation::update_item::{
        UpdateItemError, UpdateItemInput, UpdateItemOutput,
    };
    use aws_sdk_dynamodb::types::error::{
        ConditionalCheckFailedException, ProvisionedThroughputExceededException,
    };
    use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
    use aws_smithy_mocks::mock;
    use rejectwatch_core::ports::{
        AlertStateStore, Claim, ClaimOutcome, DigestLog, EvaluationProgress,
    };

    use super::super::test_support::{TABLE, code, record, sent, store};

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

    fn condition_failed(
        item: Option<HashMap<String, AttributeValue>>,
    ) -> impl Fn() -> UpdateItemError + Send + Sync {
        move || {
            UpdateItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .message("The conditional request failed")
                    .set_item(item.clone())
                    .build(),
            )
        }
    }

    fn updated() -> UpdateItemOutput {
        UpdateItemOutput::builder().build()
    }

    const SOURCE: &str = "198.51.100.7";

    fn claim() -> Claim {
        Claim {
            run_id: "run-2".into(),
            now: 10_000,
            wall_now: 10_010,
            held_until: 10_400,
            cooldown_seconds: 3_600,
            expires_at: 50_000,
        }
    }

    /// The level and the end of the finding's newest window that [`claim`] is for.
    const LEVEL: u8 = 2;
    const ACTIVITY_END: u64 = 9_900;

    fn progress_mark(window_start: u64) -> UpdateItemInput {
        UpdateItemInput::builder()
            .table_name(TABLE)
            .key("pk", s("ALERT#evaluator"))
            .key("sk", s("PROGRESS"))
            .update_expression("SET #window = :window")
            .condition_expression("attribute_not_exists(#window) OR #window < :window")
            .expression_attribute_names("#window", "window_start")
            .expression_attribute_values(":window", n(window_start))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn mark_evaluated_through_only_moves_the_mark_forward() {
        let (requests, matcher) = record::<UpdateItemInput>();
        let moved = mock!(Client::update_item)
            .match_requests(matcher)
            .then_output(updated);
        let (later, matcher) = record::<UpdateItemInput>();
        // A concurrent run recorded a later window already: the condition fails, and
        // that is no error.
        let behind = mock!(Client::update_item)
            .match_requests(matcher)
            .then_error(condition_failed(None));
        let store = store(&[&moved, &behind]);

        store.mark_evaluated_through(1_714_566_000).await.unwrap();
        store.mark_evaluated_through(1_714_565_700).await.unwrap();

        assert_eq!(sent(&requests), [progress_mark(1_714_566_000)]);
        assert_eq!(sent(&later), [progress_mark(1_714_565_700)]);
    }

    #[tokio::test]
    async fn evaluated_through_reads_the_mark_consistently() {
        let (requests, matcher) = record::<GetItemInput>();
        let marked = mock!(Client::get_item)
            .match_requests(matcher)
            .then_output(|| {
                GetItemOutput::builder()
                    .set_item(Some(item(&[
                        ("pk", s("ALERT#evaluator")),
                        ("sk", s("PROGRESS")),
                        ("window_start", n(1_714_566_000)),
                    ])))
                    .build()
            });
        let (_, matcher) = record::<GetItemInput>();
        let unmarked = mock!(Client::get_item)
            .match_requests(matcher)
            .then_output(|| GetItemOutput::builder().build());
        let store = store(&[&marked, &unmarked]);

        assert_eq!(
            store.evaluated_through().await.unwrap(),
            Some(1_714_566_000)
        );
        assert_eq!(store.evaluated_through().await.unwrap(), None);
        assert_eq!(
            sent(&requests),
            [GetItemInput::builder()
                .table_name(TABLE)
                .key("pk", s("ALERT#evaluator"))
                .key("sk", s("PROGRESS"))
                .consistent_read(true)
                .build()
                .unwrap()]
        );
    }

    #[tokio::test]
    async fn a_store_error_says_whether_a_retry_may_succeed() {
        let throttled = mock!(Client::update_item).then_error(|| {
            UpdateItemError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("slow down")
                    .meta(code("ProvisionedThroughputExceededException"))
                    .build(),
            )
        });
        let invalid = mock!(Client::update_item)
            .then_error(|| UpdateItemError::generic(code("ValidationException")));
        let store = store(&[&throttled, &invalid]);

        let error = store.mark_evaluated_through(300).await.unwrap_err();
        assert!(error.is_retryable(), "{error:?}");
        assert_eq!(
            error.to_string(),
            "recording the evaluator's progress in table counters"
        );
        let error = store.mark_evaluated_through(300).await.unwrap_err();
        assert!(!error.is_retryable(), "{error:?}");
        assert_eq!(
            error.to_string(),
            "recording the evaluator's progress in table counters"
        );
    }

    fn claim_request() -> UpdateItemInput {
        UpdateItemInput::builder()
            .table_name(TABLE)
            .key("pk", s("ALERT#198.51.100.7"))
            .key("sk", s("STATE"))
            .update_expression(
                "SET #prev_level = if_not_exists(#level, :zero), \
                 #prev_claimed = if_not_exists(#claimed, :zero), \
                 #prev_held = if_not_exists(#held, :zero), \
                 #prev_published = if_not_exists(#published, :false), \
                 #source = :source, #level = :level, #claimed = :now, #held = :held, \
                 #published = :false, #claim = :run, #expires = :expires",
            )
            .condition_expression(
                "attribute_not_exists(#pk) \
                 OR (#published = :false AND #level = :zero) \
                 OR (#published = :true AND (#claimed <= :cooldown_cutoff OR #level < :level))",
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .set_expression_attribute_names(Some(
                [
                    ("#pk", "pk"),
                    ("#source", "source"),
                    ("#level", "level"),
                    ("#claimed", "claimed_at"),
                    ("#held", "held_until"),
                    ("#published", "published"),
                    ("#claim", "claim_id"),
                    ("#expires", "expires_at"),
                    ("#prev_level", "previous_level"),
                    ("#prev_claimed", "previous_claimed_at"),
                    ("#prev_held", "previous_held_until"),
                    ("#prev_published", "previous_published"),
                ]
                .into_iter()
                .map(|(placeholder, name)| (placeholder.to_owned(), name.to_owned()))
                .collect(),
            ))
            .set_expression_attribute_values(Some(item(&[
                (":source", s(SOURCE)),
                (":level", n(2)),
                (":now", n(10_000)),
                (":held", n(10_400)),
                (":zero", n(0)),
                (":false", AttributeValue::Bool(false)),
                (":true", AttributeValue::Bool(true)),
                (":run", s("run-2")),
                (":expires", n(50_000)),
                // min(now, activity end - 1) - cooldown: 9,899 - 3,600.
                (":cooldown_cutoff", n(6_299)),
            ])))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn claim_is_one_conditional_write() {
        let (requests, matcher) = record::<UpdateItemInput>();
        let won = mock!(Client::update_item)
            .match_requests(matcher)
            .then_output(updated);
        let store = store(&[&won]);

        let outcome = store
            .claim(SOURCE.parse().unwrap(), LEVEL, ACTIVITY_END, &claim())
            .await
            .unwrap();
        assert_eq!(outcome, ClaimOutcome::Won);
        assert_eq!(sent(&requests), [claim_request()]);
    }

    #[tokio::test]
    async fn without_cooldown_the_claim_cutoff_is_minus_one() {
        let (requests, matcher) = record::<UpdateItemInput>();
        let won = mock!(Client::update_item)
            .match_requests(matcher)
            .then_output(updated);
        let store = store(&[&won]);

        let early = Claim {
            cooldown_seconds: 20_000,
            ..claim()
        };
        store
            .claim(SOURCE.parse().unwrap(), LEVEL, ACTIVITY_END, &early)
            .await
            .unwrap();
        let values = sent(&requests)[0]
            .expression_attribute_values()
            .cloned()
            .unwrap();
        assert_eq!(
            values[":cooldown_cutoff"],
            AttributeValue::N("-1".to_owned())
        );
    }

    /// What a claim whose condition failed comes to, given the item it returned.
    async fn failed_claim(held: Option<HashMap<String, AttributeValue>>) -> ClaimOutcome {
        let (requests, matcher) = record::<UpdateItemInput>();
        let lost = mock!(Client::update_item)
            .match_requests(matcher)
            .then_error(condition_failed(held));
        let store = store(&[&lost]);
        let outcome = store
            .claim(SOURCE.parse().unwrap(), LEVEL, ACTIVITY_END, &claim())
            .await
            .unwrap();
        assert_eq!(sent(&requests), [claim_request()]);
        outcome
    }

    #[tokio::test]
    async fn a_failed_claim_is_decided_from_the_item_it_returned() {
        // Another run's claim, not past its deadline.
        let held = item(&[
            ("claim_id", s("run-1")),
            ("published", AttributeValue::Bool(false)),
            ("level", n(2)),
            ("claimed_at", n(9_700)),
            ("held_until", n(10_300)),
        ]);
        assert_eq!(
            failed_claim(Some(held.clone())).await,
            ClaimOutcome::ClaimedElsewhere
        );
        // Past its deadline (10,000 <= wall clock 10,010): abandoned by its holder.
        let mut abandoned = held;
        abandoned.insert("held_until".into(), n(10_000));
        assert_eq!(
            failed_claim(Some(abandoned)).await,
            ClaimOutcome::Abandoned {
                holder: "run-1".into()
            }
        );
        // A published alert at this level, within its cooldown (claimed after 6,299).
        let published = item(&[
            ("claim_id", s("run-1")),
            ("published", AttributeValue::Bool(true)),
            ("level", n(2)),
            ("claimed_at", n(9_000)),
            ("held_until", n(9_300)),
        ]);
        assert_eq!(failed_claim(Some(published)).await, ClaimOutcome::Cooldown);
        // The item is gone since: another try later.
        assert_eq!(failed_claim(None).await, ClaimOutcome::ClaimedElsewhere);
    }

    #[tokio::test]
    async fn a_retry_of_the_holding_run_claims_again() {
        let (first, matcher) = record::<UpdateItemInput>();
        let own = item(&[
            ("claim_id", s("run-2")),
            ("published", AttributeValue::Bool(false)),
            ("level", n(1)),
            ("claimed_at", n(9_950)),
            ("held_until", n(10_300)),
        ]);
        let lost = mock!(Client::update_item)
            .match_requests(matcher)
            .then_error(condition_failed(Some(own)));
        let (again, matcher) = record::<UpdateItemInput>();
        let reclaimed = mock!(Client::update_item)
            .match_requests(matcher)
            .then_output(updated);
        let store = store(&[&lost, &reclaimed]);

        let outcome = store
            .claim(SOURCE.parse().unwrap(), LEVEL, ACTIVITY_END, &claim())
            .await
            .unwrap();
        assert_eq!(outcome, ClaimOutcome::Won);
        assert_eq!(sent(&first), [claim_request()]);
        assert_eq!(
            sent(&again),
            [UpdateItemInput::builder()
                .table_name(TABLE)
                .key("pk", s("ALERT#198.51.100.7"))
                .key("sk", s("STATE"))
                .update_expression(
                    "SET #level = :level, #claimed = :now, #held = :held, #expires = :expires"
                )
                .condition_expression("#claim = :run AND #published = :false")
                .expression_attribute_names("#level", "level")
                .expression_attribute_names("#claimed", "claimed_at")
                .expression_attribute_names("#held", "held_until")
                .expression_attribute_names("#expires", "expires_at")
                .expression_attribute_names("#claim", "claim_id")
                .expression_attribute_names("#published", "published")
                .expression_attribute_values(":level", n(2))
                .expression_attribute_values(":now", n(10_000))
                .expression_attribute_values(":held", n(10_400))
                .expression_attribute_values(":expires", n(50_000))
                .expression_attribute_values(":run", s("run-2"))
                .expression_attribute_values(":false", AttributeValue::Bool(false))
                .build()
                .unwrap()]
        );
    }

    #[tokio::test]
    async fn take_over_claims_only_an_abandoned_or_own_claim() {
        let (requests, matcher) = record::<UpdateItemInput>();
        let taken = mock!(Client::update_item)
            .match_requests(matcher)
            .then_output(updated);
        let (_, matcher) = record::<UpdateItemInput>();
        // The holder's retry took it up again meanwhile: another run's claim.
        let retaken = mock!(Client::update_item)
            .match_requests(matcher)
            .then_error(condition_failed(None));
        let store = store(&[&taken, &retaken]);
        let source = SOURCE.parse().unwrap();

        let outcome = store.take_over(source, LEVEL, &claim(), "run-1").await;
        assert_eq!(outcome.unwrap(), ClaimOutcome::Won);
        let outcome = store.take_over(source, LEVEL, &claim(), "run-1").await;
        assert_eq!(outcome.unwrap(), ClaimOutcome::ClaimedElsewhere);
        assert_eq!(
            sent(&requests),
            [UpdateItemInput::builder()
                .table_name(TABLE)
                .key("pk", s("ALERT#198.51.100.7"))
                .key("sk", s("STATE"))
                .update_expression(
                    "SET #level = :level, #claimed = :now, #held = :held, #claim = :run, \
                     #expires = :expires"
                )
                .condition_expression(
                    "#published = :false \
                     AND ((#claim = :holder AND #held <= :wall_now) OR #claim = :run)"
                )
                .expression_attribute_names("#level", "level")
                .expression_attribute_names("#claimed", "claimed_at")
                .expression_attribute_names("#held", "held_until")
                .expression_attribute_names("#claim", "claim_id")
                .expression_attribute_names("#published", "published")
                .expression_attribute_names("#expires", "expires_at")
                .expression_attribute_values(":wall_now", n(10_010))
                .expression_attribute_values(":level", n(2))
                .expression_attribute_values(":now", n(10_000))
                .expression_attribute_values(":held", n(10_400))
                .expression_attribute_values(":run", s("run-2"))
                .expression_attribute_values(":holder", s("run-1"))
                .expression_attribute_values(":false", AttributeValue::Bool(false))
                .expression_attribute_values(":expires", n(50_000))
                .build()
                .unwrap()]
        );
    }

    #[tokio::test]
    async fn release_puts_back_the_state_from_before_the_claim() {
        let (requests, matcher) = record::<UpdateItemInput>();
        let released = mock!(Client::update_item)
            .match_requests(matcher)
            .then_output(updated);
        let store = store(&[&released]);

        store
            .release(SOURCE.parse().unwrap(), &claim())
            .await
            .unwrap();
        assert_eq!(
            sent(&requests),
            [UpdateItemInput::builder()
                .table_name(TABLE)
                .key("pk", s("ALERT#198.51.100.7"))
                .key("sk", s("STATE"))
                .update_expression(
                    "SET #level = if_not_exists(#prev_level, :zero), \
                     #claimed = if_not_exists(#prev_claimed, :zero), \
                     #held = if_not_exists(#prev_held, :zero), \
                     #published = if_not_exists(#prev_published, :false)"
                )
                .condition_expression("#claim = :run AND #published = :false")
                .expression_attribute_names("#claim", "claim_id")
                .expression_attribute_names("#published", "published")
                .expression_attribute_names("#level", "level")
                .expression_attribute_names("#claimed", "claimed_at")
                .expression_attribute_names("#held", "held_until")
                .expression_attribute_names("#prev_level", "previous_level")
                .expression_attribute_names("#prev_claimed", "previous_claimed_at")
                .expression_attribute_names("#prev_held", "previous_held_until")
                .expression_attribute_names("#prev_published", "previous_published")
                .expression_attribute_values(":run", s("run-2"))
                .expression_attribute_values(":false", AttributeValue::Bool(false))
                .expression_attribute_values(":zero", n(0))
                .build()
                .unwrap()]
        );
    }

    #[test]
    fn a_placeholder_is_used_only_as_a_whole_name() {
        assert!(super::uses("#claim = :run", "#claim"));
        assert!(!super::uses("SET #claimed = :now", "#claim"));
        assert!(super::uses("SET #claimed = :now, #claim = :run", "#claim"));
        assert!(super::uses(
            "if_not_exists(#prev_held, :zero)",
            "#prev_held"
        ));
    }

    #[tokio::test]
    async fn confirm_publishes_only_the_runs_own_claim() {
        let confirm = || {
            UpdateItemInput::builder()
                .table_name(TABLE)
                .key("pk", s("ALERT#198.51.100.7"))
                .key("sk", s("STATE"))
                .update_expression("SET #published = :true")
                .condition_expression("#claim = :run AND #published = :false")
                .expression_attribute_names("#claim", "claim_id")
                .expression_attribute_names("#published", "published")
                .expression_attribute_values(":run", s("run-2"))
                .expression_attribute_values(":false", AttributeValue::Bool(false))
                .expression_attribute_values(":true", AttributeValue::Bool(true))
                .build()
                .unwrap()
        };
        let (requests, matcher) = record::<UpdateItemInput>();
        let confirmed = mock!(Client::update_item)
            .match_requests(matcher)
            .then_output(updated);
        let (taken, matcher) = record::<UpdateItemInput>();
        // Taken over meanwhile: left alone, and no error.
        let taken_over = mock!(Client::update_item)
            .match_requests(matcher)
            .then_error(condition_failed(None));
        let store = store(&[&confirmed, &taken_over]);

        store
            .confirm(SOURCE.parse().unwrap(), "run-2")
            .await
            .unwrap();
        store
            .confirm(SOURCE.parse().unwrap(), "run-2")
            .await
            .unwrap();
        assert_eq!(sent(&requests), [confirm()]);
        assert_eq!(sent(&taken), [confirm()]);
    }

    #[tokio::test]
    async fn the_digest_record_is_read_consistently_and_put() {
        let (reads, matcher) = record::<GetItemInput>();
        let recorded = mock!(Client::get_item)
            .match_requests(matcher)
            .then_output(|| {
                GetItemOutput::builder()
                    .set_item(Some(item(&[("pk", s("ALERT#RUN#run-2"))])))
                    .build()
            });
        let (_, matcher) = record::<GetItemInput>();
        let unrecorded = mock!(Client::get_item)
            .match_requests(matcher)
            .then_output(|| GetItemOutput::builder().build());
        let (puts, matcher) = record::<PutItemInput>();
        let put = mock!(Client::put_item)
            .match_requests(matcher)
            .then_output(|| PutItemOutput::builder().build());
        let store = store(&[&recorded, &unrecorded, &put]);

        assert!(store.is_published("run-2").await.unwrap());
        assert!(!store.is_published("run-3").await.unwrap());
        store
            .record_published("run-3", 7, 10_020, 60_000)
            .await
            .unwrap();

        assert_eq!(
            sent(&reads),
            [GetItemInput::builder()
                .table_name(TABLE)
                .key("pk", s("ALERT#RUN#run-2"))
                .key("sk", s("DIGEST"))
                .projection_expression("#pk")
                .expression_attribute_names("#pk", "pk")
                .consistent_read(true)
                .build()
                .unwrap()]
        );
        assert_eq!(
            sent(&puts),
            [PutItemInput::builder()
                .table_name(TABLE)
                .item("pk", s("ALERT#RUN#run-3"))
                .item("sk", s("DIGEST"))
                .item("source_count", n(7))
                .item("published_at", n(10_020))
                .item("expires_at", n(60_000))
                .build()
                .unwrap()]
        );
    }
}
