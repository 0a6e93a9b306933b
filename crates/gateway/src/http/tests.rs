use super::*;

/// The OpenAPI document and the router name the same routes.
#[test]
fn openapi_documents_every_route() {
    let text = include_str!("../../../../schemas/openapi.json");
    let document: Value = serde_json::from_str(text).unwrap();
    let paths = document["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "the document names routes the router lacks"
    );
}
