use serde_json::{json, Value};

use super::filter;
use crate::decision::Reason;
use crate::policy::ListingFormat;

fn keep_gpt(name: &str) -> bool {
    name.starts_with("gpt-")
}

fn filtered(body: &str, format: ListingFormat) -> Result<Value, Reason> {
    filter(body.as_bytes(), format, &keep_gpt)
        .map(|bytes| serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[test]
fn an_openai_listing_keeps_only_the_kept_models_and_every_other_field() {
    let body = r#"{"object":"list","data":[
        {"id":"gpt-4o","object":"model","owned_by":"demo","created":1},
        {"id":"llama-3","object":"model","owned_by":"demo","created":2},
        {"id":"gpt-4o-mini","object":"model","owned_by":"demo","created":3}]}"#;
    assert_eq!(
        filtered(body, ListingFormat::OpenAi),
        Ok(json!({"object":"list","data":[
            {"id":"gpt-4o","object":"model","owned_by":"demo","created":1},
            {"id":"gpt-4o-mini","object":"model","owned_by":"demo","created":3}]}))
    );
}

#[test]
fn a_repository_index_keeps_only_the_kept_models() {
    let body =
        r#"[{"name":"gpt-x","version":"1","state":"READY"},{"name":"iris","state":"READY"}]"#;
    assert_eq!(
        filtered(body, ListingFormat::Triton),
        Ok(json!([{"name":"gpt-x","version":"1","state":"READY"}]))
    );
}

#[test]
fn a_kserve_v1_listing_keeps_only_the_kept_models() {
    assert_eq!(
        filtered(r#"{"models":["iris","gpt-2"]}"#, ListingFormat::KServeV1),
        Ok(json!({"models":["gpt-2"]}))
    );
}

#[test]
fn a_listing_that_keeps_nothing_is_an_empty_list() {
    assert_eq!(
        filtered(
            r#"{"object":"list","data":[{"id":"iris"}]}"#,
            ListingFormat::OpenAi
        ),
        Ok(json!({"object":"list","data":[]}))
    );
}

#[test]
fn a_listing_in_another_format_is_unreadable() {
    for (body, format) in [
        (r#"[{"name":"gpt-x"}]"#, ListingFormat::OpenAi),
        (r#"{"data":[{"id":"gpt-x"}]}"#, ListingFormat::Triton),
        (r#"{"data":[{"id":"gpt-x"}]}"#, ListingFormat::KServeV1),
        (r#"{"object":"list"}"#, ListingFormat::OpenAi),
        (
            r#"{"object":"list","data":{"id":"gpt-x"}}"#,
            ListingFormat::OpenAi,
        ),
    ] {
        assert_eq!(
            filtered(body, format),
            Err(Reason::ListingUnreadable),
            "{body}"
        );
    }
}

#[test]
fn an_entry_without_a_string_name_is_unreadable_never_dropped_or_kept() {
    for body in [
        r#"{"data":[{"id":"gpt-4o"},{"name":"llama"}]}"#,
        r#"{"data":[{"id":"gpt-4o"},{"id":7}]}"#,
        r#"{"data":[{"id":"gpt-4o"},"llama"]}"#,
    ] {
        assert_eq!(
            filtered(body, ListingFormat::OpenAi),
            Err(Reason::ListingUnreadable),
            "{body}"
        );
    }
    assert_eq!(
        filtered(
            r#"{"models":["gpt-2",{"name":"iris"}]}"#,
            ListingFormat::KServeV1
        ),
        Err(Reason::ListingUnreadable)
    );
}

#[test]
fn a_repeated_key_anywhere_is_unreadable() {
    for body in [
        r#"{"data":[{"id":"gpt-4o"}],"data":[{"id":"llama"}]}"#,
        r#"{"data":[{"id":"gpt-4o","id":"llama"}]}"#,
        r#"{"data":[{"id":"gpt-4o","meta":{"a":1,"a":2}}]}"#,
    ] {
        assert_eq!(
            filtered(body, ListingFormat::OpenAi),
            Err(Reason::ListingUnreadable),
            "{body}"
        );
    }
}

#[test]
fn a_key_that_case_folds_to_a_read_key_is_unreadable() {
    for body in [
        r#"{"data":[{"id":"gpt-4o"}],"Data":[{"id":"llama"}]}"#,
        r#"{"data":[{"id":"gpt-4o","ID":"llama"}]}"#,
    ] {
        assert_eq!(
            filtered(body, ListingFormat::OpenAi),
            Err(Reason::ListingUnreadable),
            "{body}"
        );
    }
    assert_eq!(
        filtered(r#"[{"name":"gpt-x","Name":"iris"}]"#, ListingFormat::Triton),
        Err(Reason::ListingUnreadable)
    );
    // Go's encoding/json folds U+017F to 's'.
    assert_eq!(
        filtered(
            "{\"models\":[\"gpt-2\"],\"model\u{17f}\":[\"iris\"]}",
            ListingFormat::KServeV1
        ),
        Err(Reason::ListingUnreadable)
    );
}

#[test]
fn a_body_that_is_not_strict_json_is_unreadable() {
    for body in [
        "",
        "{",
        "\u{feff}{\"data\":[]}",
        "{\"data\":[]} {}",
        "{\"data\":[NaN]}",
    ] {
        assert_eq!(
            filtered(body, ListingFormat::OpenAi),
            Err(Reason::ListingUnreadable),
            "{body:?}"
        );
    }
    assert_eq!(
        filter(
            b"{\"data\":[{\"id\":\"gpt-\xff\"}]}",
            ListingFormat::OpenAi,
            &keep_gpt
        ),
        Err(Reason::ListingUnreadable)
    );
}

#[test]
fn kept_entries_and_other_fields_pass_as_the_server_wrote_them() {
    let body = "{\"object\":\"list\",\"data\":[ {\"id\":\"gpt-4o\", \"score\":1.50,\"n\":1e2},\n\
                {\"id\":\"llama\"} ,{\"id\":\"gpt-x\"}],\"z\":{\"b\":0,\"a\":[]}}";
    let filtered = filter(body.as_bytes(), ListingFormat::OpenAi, &keep_gpt).unwrap();
    assert_eq!(
        String::from_utf8(filtered).unwrap(),
        "{\"object\":\"list\",\"data\":[{\"id\":\"gpt-4o\", \"score\":1.50,\"n\":1e2},\
         {\"id\":\"gpt-x\"}],\"z\":{\"b\":0,\"a\":[]}}"
    );
}

#[test]
fn escaped_names_and_keys_are_read_unescaped() {
    assert_eq!(
        filtered(
            r#"{"\u0064ata":[{"\u0069d":"gpt\u002d4o"},{"id":"llama"}]}"#,
            ListingFormat::OpenAi
        ),
        Ok(json!({"data":[{"id":"gpt-4o"}]}))
    );
    assert_eq!(
        filtered(
            r#"{"data":[{"id":"gpt-4o","\u0049D":"llama"}]}"#,
            ListingFormat::OpenAi
        ),
        Err(Reason::ListingUnreadable)
    );
}

#[test]
fn entries_nested_in_strings_and_objects_are_not_entries() {
    assert_eq!(
        filtered(
            r#"[{"name":"iris","meta":{"name":"gpt-x","list":["]",{"a":"}"}]}},{"name":"gpt-y"}]"#,
            ListingFormat::Triton
        ),
        Ok(json!([{"name":"gpt-y"}]))
    );
}
