//! The names the configuration accepts, shared by providers, routes and `forward`.

use super::{err, ConfigError};

pub(super) fn is_plain_name(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// RFC 7230 `tchar`.
pub(super) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn header_name(path: &str, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() || !name.bytes().all(is_token_char) {
        return err(path, format!("{name:?} is not a valid header name"));
    }
    Ok(name.to_ascii_lowercase())
}
