//! The scanner alone; how `compile` names fields is tested in src/config/tests.rs.

use super::*;

fn path_of(text: &str, offset: usize, class: Class) -> String {
    path_at(text.as_bytes(), offset, class)
}

#[test]
fn line_and_column_become_a_byte_offset() {
    let text = b"{\n  \"a\": 1,\n  \"b\": 2\n}";
    assert_eq!(offset_of(text, 1, 0), 0);
    assert_eq!(offset_of(text, 2, 5), 7);
    assert_eq!(offset_of(text, 3, 8), 20);
    // Past the end (or a line that does not exist) is the end.
    assert_eq!(offset_of(text, 9, 0), text.len());
    assert_eq!(offset_of(text, 1, 999), text.len());
}

#[test]
fn keys_and_indices_make_the_path() {
    let text = r#"{"a": [1, {"b": "x"}]}"#;
    let after_x = text.find("\"x\"").unwrap() + 3;
    assert_eq!(path_of(text, after_x, Class::Value), "a[1].b");
    assert_eq!(path_of(text, after_x, Class::Container), "a[1]");
    assert_eq!(path_of(text, 0, Class::Value), "(root)");
    assert_eq!(path_of(text, text.len(), Class::Value), "(root)");
}

#[test]
fn escaped_quotes_and_backslashes_do_not_end_a_string() {
    let text = r#"{"a\"b\\": ["x\"]", "y"]}"#;
    let after_y = text.find("\"y\"").unwrap() + 3;
    assert_eq!(path_of(text, after_y, Class::Value), "a\"b\\[1]");
}

#[test]
fn escaped_keys_are_decoded() {
    let text = r#"{"m\u00e9thod\u007a": 1}"#;
    assert_eq!(path_of(text, text.len() - 1, Class::Value), "méthodz");
}

#[test]
fn a_wrong_typed_element_is_named_before_it_is_read() {
    let text = r#"{"a": ["x", {}]}"#;
    let before_object = text.rfind('{').unwrap();
    assert_eq!(path_of(text, before_object, Class::Value), "a[1]");
    assert_eq!(path_of("{\"a\": []}", 7, Class::Value), "a");
}

#[test]
fn the_scan_stops_at_the_first_byte_that_is_not_json() {
    let text = r#"{"a": 1 "b": 2}"#;
    assert_eq!(path_of(text, text.len(), Class::Container), "(root)");
    assert_eq!(path_of(text, text.len(), Class::Value), "a");
}

/// Any bytes, any position, any class: a path and no panic (the scan has no indexing to fail).
#[test]
fn arbitrary_input_never_panics() {
    let samples: [&[u8]; 8] = [
        b"",
        b"\"",
        b"{\"a\\",
        b"]]]}}}{{{[[[",
        b"{\"a\":[1,{\"b\":\"\\u12\"}],,}",
        b"\xff\xfe{\"\xc3\x28\": \"\xf0\x28\x8c\xbc\"}",
        b"{\"a\" \"b\" : : 1 2 3",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ];
    for bytes in samples {
        for offset in 0..=bytes.len() + 2 {
            for class in [
                Class::Field,
                Class::Container,
                Class::Peeked,
                Class::Token,
                Class::Value,
            ] {
                assert!(!path_at(bytes, offset, class).is_empty());
            }
        }
    }
}

#[test]
fn an_error_read_past_its_token_is_put_back_in_it() {
    // `-` then `,`: serde_json reports the bad number after the comma it read.
    let text = r#"{"a": -, "b": 1}"#;
    let after_comma = text.find(',').unwrap() + 1;
    assert_eq!(path_of(text, after_comma, Class::Token), "a");
    assert_eq!(path_of(text, after_comma, Class::Value), "(root)");
}

#[test]
fn a_peeked_byte_is_not_part_of_the_path() {
    let text = r#"{"a": [1]}"#;
    let after_bracket = text.find('[').unwrap() + 1;
    assert_eq!(path_of(text, after_bracket, Class::Peeked), "a");
    assert_eq!(path_of(text, after_bracket, Class::Value), "a[0]");
}

/// Real serde_json errors, applied to their own text and to every other sample (positions past
/// the end, on other lines): always a path.
#[test]
fn real_errors_on_any_text_never_panic() {
    let samples: [&[u8]; 6] = [
        b"{\"a\": [1, 2,]}",
        b"{\"a\"\n:\n{\"b\": tru}}",
        b"[\"\\u12\"]",
        b"{\"a\": 1} x",
        b"\n\n\n{\"a\": \"\n",
        b"{\"a\": {\"b\": [[[[[[[",
    ];
    for text in samples {
        for end in 0..=text.len() {
            let prefix = &text[..end];
            let Err(error) = serde_json::from_slice::<serde_json::Value>(prefix) else {
                continue;
            };
            for other in samples {
                assert!(!error_path(other, &error).is_empty());
            }
            assert!(!error_message(&error).contains(" at line "), "{error}");
        }
    }
}
