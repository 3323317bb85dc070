//! The OpenAPI document served at `/openapi.json`.
//!
//! `crates/api/openapi.json` describes each operation (parameters, body, its own
//! answers) and the schemas. What every operation shares because of the router's
//! layers is added here, from the same rules those layers follow, so it cannot drift
//! from them: `413 payload_too_large` (declared body over the limit), `415
//! unsupported_media_type` and `400 invalid_body` on JSON bodies, `429 rate_limited`
//! with `Retry-After` on every rate-limited route, `500 internal`, `503 timeout`, and
//! the `x-request-id` header on every answer. Tests check that the document lists
//! exactly the router's routes and that real answers match its schemas.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::RouteSpec;

static BASE: &str = include_str!("../openapi.json");
static DOCUMENT: OnceLock<String> = OnceLock::new();

/// The document as served.
pub fn document() -> &'static str {
    DOCUMENT.get_or_init(|| {
        let mut doc: Value = match serde_json::from_str(BASE) {
            Ok(v) => v,
            // A unit test parses the base document: this cannot ship broken.
            Err(e) => json!({ "openapi": "3.1.0", "info": { "title": format!("broken document: {e}"), "version": "0" } }),
        };
        complete(&mut doc, &crate::public_routes(true));
        doc.to_string()
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "headers": { "x-request-id": { "$ref": "#/components/headers/RequestId" } },
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

/// Adds `code` to the answer `status` of `op`, creating the answer if the base
/// document has none.
fn add_error(responses: &mut Map<String, Value>, status: &str, code: &str) {
    match responses.get_mut(status) {
        Some(existing) => {
            if let Some(desc) = existing.get("description").and_then(Value::as_str) {
                if !desc.contains(code) {
                    existing["description"] = Value::String(format!("{desc}; {code}"));
                }
            }
        }
        None => {
            responses.insert(status.to_owned(), error_response(code));
        }
    }
}

fn has_json_body(op: &Value) -> bool {
    op.pointer("/requestBody/content/application~1json")
        .is_some()
}

/// Adds the answers and headers every operation of `routes` shares.
pub(crate) fn complete(doc: &mut Value, routes: &[RouteSpec]) {
    let components = &mut doc["components"];
    components["headers"]["RequestId"] = json!({
        "description": "The request's id: the client's `x-request-id` when short and plain, else a new UUID. Errors repeat it as `error.request_id`.",
        "schema": { "type": "string" }
    });
    components["headers"]["RetryAfter"] = json!({
        "description": "Whole seconds to wait before the next request.",
        "schema": { "type": "integer", "minimum": 1 }
    });
    for route in routes {
        let method = route.method.as_str().to_ascii_lowercase();
        let Some(op) = doc
            .get_mut("paths")
            .and_then(|p| p.get_mut(route.path))
            .and_then(|item| item.get_mut(&method))
        else {
            // Left out on purpose: the test comparing routes and document fails.
            continue;
        };
        let json_body = has_json_body(op);
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
            continue;
        };
        // Any request that declares a body over the limit, whatever the route.
        add_error(responses, "413", "payload_too_large");
        if json_body {
            add_error(responses, "400", "invalid_body");
            add_error(responses, "415", "unsupported_media_type");
        }
        if crate::ratelimit::is_limited(route.path) {
            add_error(responses, "429", "rate_limited");
            responses["429"]["headers"]["Retry-After"] =
                json!({ "$ref": "#/components/headers/RetryAfter" });
        }
        add_error(responses, "500", "internal");
        add_error(responses, "503", "timeout");
        for response in responses.values_mut() {
            if let Some(obj) = response.as_object_mut() {
                let headers = obj.entry("headers").or_insert_with(|| json!({}));
                headers["x-request-id"] = json!({ "$ref": "#/components/headers/RequestId" });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_document_parses_and_every_route_gets_the_shared_answers() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for route in crate::public_routes(true) {
            let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
            assert!(
                op.is_object(),
                "{} {} undocumented",
                route.method,
                route.path
            );
            for status in ["413", "500", "503"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{} {status}",
                    route.path
                );
            }
        }
    }
}
