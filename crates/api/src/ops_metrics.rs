//! Operations gauges on `/metrics` that alerts are written against (deploy/prometheus):
//! dead letters waiting for an operator, whether each chain monitor has a leader, and
//! the age limit of the reserve figures. Read from the database at each scrape, like
//! the other store gauges, so every `serve` process reports the same figures.

use ubtc_core::Timestamp;

use crate::error::ApiError;
use crate::state::ApiState;

/// Sets the operations gauges. Called by the `/metrics` handler before rendering.
pub(crate) async fn refresh(state: &ApiState, now: Timestamp) -> Result<(), ApiError> {
    let dead = state.store.dead_letter_counts().await?;
    for (kind, n) in [
        ("webhook_callback", dead.webhook_callbacks),
        ("webhook_delivery", dead.webhook_deliveries),
        ("reserve_mint", dead.reserve_mints),
        ("reserve_burn", dead.reserve_burns),
        ("reserve_release", dead.reserve_releases),
    ] {
        metrics::gauge!("ubtc_dead_letters", "kind" => kind).set(n as f64);
    }
    // One lease per configured chain (`monitor:<chain>`, pipeline::LeasedMonitor): a
    // lease past its expiry means no process is detecting payments on that chain.
    for chain in state.chains.iter() {
        let lease = state
            .store
            .get_lease(&format!("monitor:{}", chain.name))
            .await?;
        let led = lease.is_some_and(|l| l.expires_at.as_millis() > now.as_millis());
        metrics::gauge!("ubtc_monitor_leader", "chain" => chain.name.to_string()).set(if led {
            1.0
        } else {
            0.0
        });
    }
    if let Some(max_age_ms) = state.reserve_max_age_ms {
        metrics::gauge!("ubtc_reserve_snapshot_max_age_seconds").set(max_age_ms as f64 / 1000.0);
    }
    Ok(())
}
