//! Wiring: configuration, SDK clients and adapters built once, then the runtime loop.

use ingest_flow_logs::config::Config;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ingest_flow_logs::{Deps, handle_payload};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use rejectwatch_aws::dynamodb::DynamoCounterStore;
use rejectwatch_aws::s3::S3ObjectSource;
use rejectwatch_aws::sdk;
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // A missing or invalid variable fails the init phase, naming the variable.
    let config = Config::from_env()?;
    let sdk_config = sdk::load_config(None).await;
    let deps = Deps::new(
        DynamoCounterStore::new(
            // Bursts of deliveries can throttle on-demand tables briefly; back off and
            // retry rather than fail the whole delivery.
            sdk::dynamodb_client(&sdk_config, Some(8)),
            config.table_name.clone(),
            config.retention_seconds,
            config.write_concurrency,
        ),
        S3ObjectSource::new(sdk::s3_client(&sdk_config)),
        config,
    );
    // The payload arrives as JSON and is classified by `handle_payload`, so a payload of
    // no known shape is still a logged `Ingest.Event` failure (see there).
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let deadline = deadline_of(&event.context);
        handle_payload(event.payload, &deps, deadline)
    }))
    .await
}

/// The invocation's deadline (unix milliseconds in the context) as an `Instant`; `None`
/// when it is not in the future, as from local emulators that send none.
fn deadline_of(context: &lambda_runtime::Context) -> Option<Instant> {
    let now_millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let left = context
        .deadline
        .checked_sub(now_millis)
        .filter(|&left| left > 0)?;
    Some(Instant::now() + Duration::from_millis(left))
}
