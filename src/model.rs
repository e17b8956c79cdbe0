//! The model a request names, read the way the model server will read it, or refused.
//!
//! A model rule is only as strong as the reading of the model: a request whose model mlgate
//! reads one way and the model server another gets past `deny` rules. So the model is taken only
//! when there is exactly one way to read it — one header value without a comma and no other
//! spelling of the header's name; one top-level JSON string in a body that is strict JSON (RFC
//! 8259: UTF-8, no BOM, no `NaN`, within serde_json's nesting limit), with no repeated top-level
//! key and no second key that case-folds to the model's (Go's `encoding/json` matches keys that
//! way, the last one winning), sent as `application/json` without a content encoding. Anything
//! else is a [`ModelError`], which a route whose model decides anything refuses instead of
//! judging the request as if it named no model.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::claims::Identity;
use crate::decision::Reason;
use crate::policy::Route;
use crate::strict_json::{KeySeed, SeenKeys};

/// Why a request's model cannot be judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelError {
    /// No model, or an empty one.
    Missing,
    /// A body that is not strict JSON, not an object, or whose model is not a string.
    Unreadable,
    /// More than one way to read the model: a repeated header or body key, a comma in a header
    /// value, another spelling of the header's name or of the body key.
    Ambiguous,
    /// A body sent as something other than `application/json` (UTF-8), or with a content encoding.
    UnsupportedMediaType,
}

impl ModelError {
    pub fn reason(self) -> Reason {
        match self {
            ModelError::Missing => Reason::ModelMissing,
            ModelError::Unreadable => Reason::ModelUnreadable,
            ModelError::Ambiguous => Reason::ModelAmbiguous,
            ModelError::UnsupportedMediaType => Reason::UnsupportedMediaType,
        }
    }
}

/// Whether the identity alone settles the request on this route: a deny rule without `models`
/// matches it, or no allow rule could match it whatever the model. Then no model can change the
/// verdict, and one that cannot be read is no reason to refuse.
pub(crate) fn decided_without_model(route: &Route, identity: &Identity) -> bool {
    let denied_outright = route
        .deny
        .iter()
        .any(|rule| rule.models.is_empty() && rule.matches_identity(identity));
    let hopeless = !route.allow.is_empty()
        && !route
            .allow
            .iter()
            .any(|rule| rule.matches_identity(identity));
    denied_outright || hopeless
}

/// The model named by a request header. `value` is the header's value as the host gives it (a
/// repeated header joined by `,`); `aliased` says whether the request also carries another
/// spelling of the header's name (see [`is_alias`]).
pub fn from_header(value: Option<&str>, aliased: bool) -> Result<&str, ModelError> {
    if aliased {
        return Err(ModelError::Ambiguous);
    }
    let value = value.ok_or(ModelError::Missing)?;
    // A repeated header arrives joined by `,`; an upstream may take the first or the last
    // value, and a glob's `*` would match across the comma. One value, or none.
    if value.contains(',') {
        return Err(ModelError::Ambiguous);
    }
    if value.trim().is_empty() {
        return Err(ModelError::Missing);
    }
    Ok(value)
}

/// Whether the header `name` is another spelling of `model_header` that a server could read as
/// the same header: CGI and WSGI servers turn `-` and `_` alike into `_`
/// (`azureml_model_deployment` and `azureml-model-deployment` are one variable to them).
pub fn is_alias(name: &str, model_header: &str) -> bool {
    name.len() == model_header.len()
        && name != model_header
        && name.bytes().zip(model_header.bytes()).all(|(n, m)| {
            n.eq_ignore_ascii_case(&m) || (matches!(n, b'_' | b'-') && matches!(m, b'_' | b'-'))
        })
}

/// Whether the body's headers let it be read as the model server reads it: `application/json`
/// (any parameters, but a charset only `utf-8`) and no content encoding but `identity`.
pub fn check_json_media(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<(), ModelError> {
    if let Some(encoding) = content_encoding {
        if !encoding.trim().eq_ignore_ascii_case("identity") {
            return Err(ModelError::UnsupportedMediaType);
        }
    }
    let content_type = content_type.ok_or(ModelError::UnsupportedMediaType)?;
    let mut parts = content_type.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ModelError::UnsupportedMediaType);
    }
    for parameter in parts {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        if name.trim().eq_ignore_ascii_case("charset") {
            let charset = value.trim().trim_matches('"');
            if !charset.eq_ignore_ascii_case("utf-8") {
                return Err(ModelError::UnsupportedMediaType);
            }
        }
    }
    Ok(())
}

/// The model named by the top-level string field `field` of a JSON body.
pub fn from_json_body(body: &[u8], field: &str) -> Result<String, ModelError> {
    if body
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Err(ModelError::Missing);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let read = TopLevel { field }
        .deserialize(&mut deserializer)
        .map_err(|_| ModelError::Unreadable)?;
    deserializer.end().map_err(|_| ModelError::Unreadable)?;
    if read.ambiguous {
        return Err(ModelError::Ambiguous);
    }
    match read.model {
        None => Err(ModelError::Missing),
        Some(Value::String(model)) if model.is_empty() => Err(ModelError::Missing),
        Some(Value::String(model)) => Ok(model),
        // `null`, a number, an object: a server may read any of them as "no model" and serve
        // its default, or refuse; mlgate cannot tell which.
        Some(_) => Err(ModelError::Unreadable),
    }
}

/// What the top-level object says about the model.
struct TopLevelRead {
    model: Option<Value>,
    ambiguous: bool,
}

struct TopLevel<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = TopLevelRead;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<TopLevelRead, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = TopLevelRead;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<TopLevelRead, A::Error> {
        let mut read = TopLevelRead {
            model: None,
            ambiguous: false,
        };
        let mut seen = SeenKeys::default();
        while let Some(key) = access.next_key_seed(KeySeed)? {
            let is_field = key.as_str() == self.field;
            if !is_field && folds_to(key.as_str(), self.field) {
                read.ambiguous = true;
            }
            seen.push(key);
            if is_field {
                read.model = Some(access.next_value::<Value>()?);
            } else {
                access.next_value::<IgnoredAny>()?;
            }
        }
        read.ambiguous |= seen.any_repeated();
        Ok(read)
    }
}

/// Whether `key` names `field` to a parser that compares keys case-insensitively, as Go's
/// `encoding/json` does with Unicode simple case folding. For field names in ASCII (every model
/// field in practice) exactly two other characters fold into ASCII letters: `ſ` (U+017F) to `s`
/// and the Kelvin sign `K` (U+212A) to `k`; the rest is ASCII case. Written out rather than with
/// `char::to_lowercase`, whose Unicode tables cost 27 KB of .wasm for no other key.
pub(crate) fn folds_to(key: &str, field: &str) -> bool {
    fn fold(c: char) -> char {
        match c {
            '\u{17f}' => 's',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        }
    }
    key.chars().map(fold).eq(field.chars().map(fold))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Result<String, ModelError> {
        from_json_body(text.as_bytes(), "model")
    }

    #[test]
    fn a_plain_body_names_its_model() {
        assert_eq!(
            body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}]}"#),
            Ok("gpt-4o-mini".into())
        );
    }

    #[test]
    fn an_escaped_model_is_read_unescaped() {
        assert_eq!(body(r#"{"mod\u0065l":"gpt\u002d4o"}"#), Ok("gpt-4o".into()));
    }

    #[test]
    fn a_body_without_the_field_has_no_model() {
        assert_eq!(body(r#"{"messages":[]}"#), Err(ModelError::Missing));
        assert_eq!(body(""), Err(ModelError::Missing));
        assert_eq!(body(" \n"), Err(ModelError::Missing));
        assert_eq!(body(r#"{"model":""}"#), Err(ModelError::Missing));
    }

    #[test]
    fn a_model_that_is_not_a_string_is_unreadable() {
        for text in [
            r#"{"model":null}"#,
            r#"{"model":4}"#,
            r#"{"model":["gpt-4o"]}"#,
        ] {
            assert_eq!(body(text), Err(ModelError::Unreadable), "{text}");
        }
    }

    #[test]
    fn a_body_serde_refuses_is_unreadable_never_modelless() {
        for text in [
            "\u{feff}{\"model\":\"gpt-4o\"}",
            r#"{"model":"gpt-4o","t":NaN}"#,
            r#"{"model":"\ud800"}"#,
            r#"{"model":"gpt-4o"} trailing"#,
            r#"["model","gpt-4o"]"#,
            r#"{"model":"gpt-4o","#,
        ] {
            assert_eq!(body(text), Err(ModelError::Unreadable), "{text}");
        }
        assert_eq!(
            from_json_body(b"{\"model\":\"gpt-\xff\"}", "model"),
            Err(ModelError::Unreadable)
        );
    }

    #[test]
    fn deep_nesting_beside_the_model_is_read_as_a_server_reads_it_and_never_overflows() {
        let deep = |depth: usize| {
            format!(
                "{{\"model\":\"gpt-4o\",\"x\":{}{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        assert_eq!(body(&deep(200)), Ok("gpt-4o".into()));
        let absurd = format!("{{\"model\":\"gpt-4o\",\"x\":{}", "[".repeat(100_000));
        assert_eq!(body(&absurd), Err(ModelError::Unreadable));
        // serde_json skips values without recursion: no depth can overflow the VM's stack.
        assert_eq!(body(&deep(100_000)), Ok("gpt-4o".into()));
    }

    #[test]
    fn a_repeated_key_is_ambiguous() {
        assert_eq!(
            body(r#"{"model":"gpt-4o-mini","model":"gpt-4o"}"#),
            Err(ModelError::Ambiguous)
        );
        assert_eq!(
            body(r#"{"model":"gpt-4o-mini","mod\u0065l":"gpt-4o"}"#),
            Err(ModelError::Ambiguous)
        );
        assert_eq!(
            body(r#"{"model":"gpt-4o-mini","n":1,"n":2}"#),
            Err(ModelError::Ambiguous)
        );
    }

    #[test]
    fn a_key_that_case_folds_to_the_model_field_is_ambiguous() {
        for text in [
            r#"{"model":"gpt-4o-mini","Model":"gpt-4o"}"#,
            r#"{"MODEL":"gpt-4o"}"#,
            r#"{"model":"gpt-4o-mini","modeL":"x"}"#,
        ] {
            assert_eq!(body(text), Err(ModelError::Ambiguous), "{text}");
        }
        assert!(folds_to("taſk", "task"));
        assert!(folds_to("\u{212a}ind", "kind"));
        assert!(!folds_to("models", "model"));
    }

    #[test]
    fn many_distinct_keys_are_checked_in_linear_time() {
        let mut text = String::from("{\"model\":\"gpt-4o\"");
        for i in 0..20_000 {
            text.push_str(&format!(",\"k{i}\":0"));
        }
        text.push('}');
        assert_eq!(body(&text), Ok("gpt-4o".into()));
        text.insert_str(text.len() - 1, ",\"k19999\":1");
        assert_eq!(body(&text), Err(ModelError::Ambiguous));
    }

    #[test]
    fn a_header_model_is_one_non_empty_value() {
        assert_eq!(from_header(Some("blue"), false), Ok("blue"));
        assert_eq!(from_header(None, false), Err(ModelError::Missing));
        assert_eq!(from_header(Some(" "), false), Err(ModelError::Missing));
        assert_eq!(
            from_header(Some("public-demo,finance-risk"), false),
            Err(ModelError::Ambiguous)
        );
        assert_eq!(from_header(Some("blue"), true), Err(ModelError::Ambiguous));
    }

    #[test]
    fn underscore_spellings_of_the_model_header_are_aliases() {
        let name = "azureml-model-deployment";
        assert!(is_alias("azureml_model_deployment", name));
        assert!(is_alias("azureml-model_deployment", name));
        assert!(!is_alias(name, name));
        assert!(!is_alias("azureml-model-deploymentx", name));
        assert!(!is_alias("x-request-id", name));
    }

    #[test]
    fn json_media_is_application_json_in_utf8_without_encoding() {
        assert_eq!(check_json_media(Some("application/json"), None), Ok(()));
        assert_eq!(
            check_json_media(
                Some("Application/JSON; charset=\"UTF-8\""),
                Some("identity")
            ),
            Ok(())
        );
        for (content_type, encoding) in [
            (None, None),
            (Some("text/plain"), None),
            (Some("application/json; charset=utf-16"), None),
            (Some("application/json,text/plain"), None),
            (Some("application/x-www-form-urlencoded"), None),
            (Some("application/json"), Some("gzip")),
            (Some("application/json"), Some("identity, gzip")),
        ] {
            assert_eq!(
                check_json_media(content_type, encoding),
                Err(ModelError::UnsupportedMediaType),
                "{content_type:?} {encoding:?}"
            );
        }
    }
}
