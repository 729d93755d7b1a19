//! The evaluator's state: per-source alert claims (`impl AlertStateStore`), its progress
//! mark (`impl EvaluationProgress`) and the digest records (`impl DigestLog`).

use std::net::IpAddr;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
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
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(alert_key(source)))
            .key(SK, AttributeValue::S(STATE_SK.into()))
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
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#source", SOURCE)
            .expression_attribute_names("#level", LEVEL)
            .expression_attribute_names("#claimed", CLAIMED_AT)
            .expression_attribute_names("#held", HELD_UNTIL)
            .expression_attribute_names("#published", PUBLISHED)
            .expression_attribute_names("#claim", CLAIM_ID)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#prev_level", PREVIOUS_LEVEL)
            .expression_attribute_names("#prev_claimed", PREVIOUS_CLAIMED_AT)
            .expression_attribute_names("#prev_held", PREVIOUS_HELD_UNTIL)
            .expression_attribute_names("#prev_published", PREVIOUS_PUBLISHED)
            .expression_attribute_values(":source", AttributeValue::S(source.to_string()))
            .expression_attribute_values(":level", number(u64::from(level)))
            .expression_attribute_values(":now", number(claim.now))
            .expression_attribute_values(":held", number(claim.held_until))
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":run", AttributeValue::S(claim.run_id.clone()))
            .expression_attribute_values(":expires", number(claim.expires_at))
            .expression_attribute_values(
                ":cooldown_cutoff",
                AttributeValue::N(
                    cooldown_cutoff(claim.now, activity_end, claim.cooldown_seconds)
                        .map_or_else(|| "-1".to_owned(), |cutoff| cutoff.to_string()),
                ),
            )
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
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(alert_key(source)))
            .key(SK, AttributeValue::S(STATE_SK.into()))
            .update_expression(
                "SET #level = :level, #claimed = :now, #held = :held, #claim = :run, \
                 #expires = :expires",
            )
            // The holder's claim only while it is still past its `held_until` (its own
            // retry may have taken it up again); this run's own claim too: an attempt that
            // was applied but whose answer was lost is retried by the SDK, and must not
            // read as another run's success.
            .condition_expression(
                "#published = :false \
                 AND ((#claim = :holder AND #held <= :wall_now) OR #claim = :run)",
            )
            .expression_attribute_values(":wall_now", number(claim.wall_now))
            .expression_attribute_names("#level", LEVEL)
            .expression_attribute_names("#claimed", CLAIMED_AT)
            .expression_attribute_names("#held", HELD_UNTIL)
            .expression_attribute_names("#claim", CLAIM_ID)
            .expression_attribute_names("#published", PUBLISHED)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":level", number(u64::from(level)))
            .expression_attribute_values(":now", number(claim.now))
            .expression_attribute_values(":held", number(claim.held_until))
            .expression_attribute_values(":run", AttributeValue::S(claim.run_id.clone()))
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":expires", number(claim.expires_at))
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
            &[],
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
            &[
                ("#level", LEVEL),
                ("#claimed", CLAIMED_AT),
                ("#held", HELD_UNTIL),
                ("#prev_level", PREVIOUS_LEVEL),
                ("#prev_claimed", PREVIOUS_CLAIMED_AT),
                ("#prev_held", PREVIOUS_HELD_UNTIL),
                ("#prev_published", PREVIOUS_PUBLISHED),
            ],
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

impl DynamoCounterStore {
    /// A retry of the run that holds an unpublished claim (Lambda keeps the request id):
    /// it takes the claim up again, keeping the state from before the first attempt.
    async fn reclaim(
        &self,
        source: IpAddr,
        level: u8,
        claim: &Claim,
    ) -> Result<ClaimOutcome, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(alert_key(source)))
            .key(SK, AttributeValue::S(STATE_SK.into()))
            .update_expression(
                "SET #level = :level, #claimed = :now, #held = :held, #expires = :expires",
            )
            .condition_expression("#claim = :run AND #published = :false")
            .expression_attribute_names("#level", LEVEL)
            .expression_attribute_names("#claimed", CLAIMED_AT)
            .expression_attribute_names("#held", HELD_UNTIL)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#claim", CLAIM_ID)
            .expression_attribute_names("#published", PUBLISHED)
            .expression_attribute_values(":level", number(u64::from(level)))
            .expression_attribute_values(":now", number(claim.now))
            .expression_attribute_values(":held", number(claim.held_until))
            .expression_attribute_values(":expires", number(claim.expires_at))
            .expression_attribute_values(":run", AttributeValue::S(claim.run_id.clone()))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
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
        names: &[(&str, &str)],
        values: &[(&str, AttributeValue)],
        action: &str,
    ) -> Result<(), StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(alert_key(source)))
            .key(SK, AttributeValue::S(STATE_SK.into()))
            .update_expression(update_expression)
            .condition_expression("#claim = :run AND #published = :false")
            .expression_attribute_names("#claim", CLAIM_ID)
            .expression_attribute_names("#published", PUBLISHED)
            .expression_attribute_values(":run", AttributeValue::S(run_id.to_owned()))
            .expression_attribute_values(":false", AttributeValue::Bool(false));
        for (placeholder, name) in names {
            request = request.expression_attribute_names(*placeholder, *name);
        }
        for (placeholder, value) in values {
            request = request.expression_attribute_values(*placeholder, value.clone());
        }
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
