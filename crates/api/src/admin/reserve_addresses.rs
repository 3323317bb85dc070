//! The reserve address registry in the admin API: every address ever registered,
//! active and retired, so an operator or auditor can see what the reserves counted and
//! when an address stopped counting. Read-only: the `ubtc` binary adds and retires
//! addresses (at start-up and from its command line), not this API.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use ubtc_store::ReserveAddress;

use super::Principal;
use crate::error::ApiError;
use crate::state::ApiState;

#[derive(Debug, Serialize)]
pub struct ReserveAddressList {
    items: Vec<ReserveAddress>,
}

/// `GET /v1/admin/reserve-addresses`: the whole registry, oldest first.
pub async fn list(
    State(state): State<ApiState>,
    _principal: Principal,
) -> Result<Json<ReserveAddressList>, ApiError> {
    let items = state.store.list_all_reserve_addresses().await?;
    Ok(Json(ReserveAddressList { items }))
}
