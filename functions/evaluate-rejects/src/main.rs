//! Wiring: configuration, SDK clients and adapters built once, then the runtime loop.

use evaluate_rejects::config::Config;
use evaluate_rejects::{Deps, ScheduleEvent, handle_until, unix_now};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use rejectwatch_aws::dynamodb::DynamoCounterStore;
use rejectwatch_aws::sdk;
use rejectwatch_aws::sns::SnsAlertPublisher;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // A missing or invalid variable fails the init phase, naming the variable.
    let config = Config::from_env()?;
    let sdk_config = sdk::load_config(None).await;
    if config.cooldown_seconds != config.requested_cooldown_seconds {
        tracing::warn!(
            requested_minutes = config.requested_cooldown_seconds / 60,
            cooldown_minutes = config.cooldown_seconds / 60,
            "ALERT_COOLDOWN_MINUTES raised to SETTLE_MINUTES + WINDOW_MINUTES: a shorter \
             cooldown would alert again on windows still being read"
        );
    }
    let deps = Deps::new(
        DynamoCounterStore::new(
            // A run reads a few hundred partitions; retrying a throttled or failed read a
            // few times is cheaper than failing the run and reading them all again.
            sdk::dynamodb_client(&sdk_config, Some(5)),
            config.table_name.clone(),
            config.retention_seconds,
            16,
        )
        .with_index_shards(config.index_shards),
        SnsAlertPublisher::new(sdk::sns_client(&sdk_config), config.topic_arn.clone()),
        config,
    );
    lambda_runtime::run(service_fn(|event: LambdaEvent<ScheduleEvent>| {
        let deps = &deps;
        // Lambda's deadline, in unix milliseconds. Local emulators send none (0) or a
        // placeholder in the past (cargo lambda watch: 600,000); a deadline already gone
        // would leave no time to claim anything, so such a run counts as having none.
        let deadline = Some(event.context.deadline / 1000).filter(|&seconds| seconds > unix_now());
        async move { handle_until(event.payload, &event.context.request_id, deadline, deps).await }
    }))
    .await
}
