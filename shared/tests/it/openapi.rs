//! The OpenAPI document the handlers describe, against the one committed at `openapi.json`: a
//! change to the API changes the document in the same commit, where a reviewer sees it.
//! `LABELQ_BLESS=1` rewrites the committed file from the code.

use labelq_shared::http::openapi;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.json");

#[test]
fn the_committed_openapi_document_is_the_one_the_code_describes() {
    let generated = serde_json::to_string_pretty(&openapi::document()).expect("the document serialises") + "\n";
    if std::env::var_os("LABELQ_BLESS").is_some() {
        std::fs::write(COMMITTED, &generated).expect("writing openapi.json");
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi.json differs from what the code describes; review the change and run \
         `LABELQ_BLESS=1 cargo test -p labelq-shared --test it openapi` to commit it"
    );
}

#[test]
fn every_operation_has_an_id_and_every_secured_one_answers_401_500_and_503() {
    let document = serde_json::to_value(openapi::document()).unwrap();
    let mut ids = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no id"));
            ids.push(id.to_owned());
            let public =
                operation["security"].as_array().is_some_and(|s| s.iter().all(|r| r == &serde_json::json!({})));
            if !public {
                for status in ["401", "500", "503"] {
                    assert!(operation["responses"][status].is_object(), "{method} {path} lacks {status}");
                }
            }
        }
    }
    ids.sort();
    assert_eq!(
        ids,
        [
            "deleteDefaultCallback",
            "deleteImage",
            "followImage",
            "getDefaultCallback",
            "getHealth",
            "getImage",
            "getOpenApi",
            "listImages",
            "liveJobs",
            "reserveUpload",
            "setDefaultCallback",
            "submitImage"
        ]
    );
}
