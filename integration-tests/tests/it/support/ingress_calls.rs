//! Calls to the harness's ingress that several areas make the same way.

use integration_tests::{ingress_client, Running};
use serde_json::json;

/// Posts a uid `bind` of `portal` and `phonish` to `ingress`; asserts the 200 that says the
/// broker has it.
pub(crate) async fn post_bind(ingress: &Running, portal: u64, phonish: u64) {
    let resp = ingress_client()
        .post(ingress.url("/v1/uid-notify"))
        .json(&json!({"portal_uid": portal, "phonish_uid": phonish, "event_type": "bind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}
