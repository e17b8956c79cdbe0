//! The field a configuration parse error is about, as a path (`routes[1].allow[0].groups`).
//!
//! serde_json reports where it stopped (line and column) but not which field it was reading.
//! `serde_path_to_error` finds the field by wrapping every `Deserializer`, `Visitor`,
//! `MapAccess` and `SeqAccess` serde touches; those generic wrappers are monomorphised for every
//! configuration type and cost about 94 KB of the .wasm (V8 compiles every function, so size is
//! also Envoy memory). This module is the hand-written alternative: one linear pass over the
//! configuration bytes up to the reported position, tracking the open objects (`.key`) and arrays
//! (`[index]`), then a small rule per error class for which value the position belongs to.
//!
//! Where serde_json puts the position, by error class (`compile` parses with `from_slice`), and
//! so which value it names:
//!
//! * unknown field: just after the key (and any whitespace): the path ends in the key.
//! * duplicate field, an enum's unknown variant written as `{"variant": ...}`, expected `:`: also
//!   just after a key, but the error is the object's (the message names the key), so the key is
//!   left out.
//! * invalid type or value of a string, number or literal: just after the value.
//! * invalid type of an object or array: just before its `{` or `[`, which serde_json peeks at
//!   without consuming; after `[` or `,` in an array, that names the element that follows.
//! * missing field, invalid length (a struct written as an array): just after the closing `}` or
//!   `]`, which serde_json consumes before reporting: the object or array that closed.
//! * expected value, recursion limit exceeded: just after the byte serde_json peeked at, so the
//!   position moves back one byte.
//! * syntax errors inside a string, number or literal (bad escape, bad number, EOF in a string):
//!   serde_json may have read a few bytes past the token, so the last token that started.
//! * expected `,` or `]`/`}`, trailing comma, trailing characters, EOF in a list or object: the
//!   container being read (`(root)` for characters after the document). serde_path_to_error
//!   names an object's unread next key `?` here; this names the object.
//!
//! src/config/tests.rs checks these paths against serde_path_to_error's (a dev-dependency) for
//! thousands of malformed variants of the configurations in filters/.
//!
//! The scan never indexes out of bounds, never recurses and allocates one frame per open
//! container, so any bytes and any position are safe and the cost is linear in the input.

use serde_json::error::Category;

/// `<path>` for a serde_json error from parsing `bytes` with `serde_json::from_slice`.
pub fn error_path(bytes: &[u8], error: &serde_json::Error) -> String {
    if error.line() == 0 {
        return "(root)".to_string();
    }
    let offset = offset_of(bytes, error.line(), error.column());
    path_at(bytes, offset, classify(error))
}

fn classify(error: &serde_json::Error) -> Class {
    let message = error.to_string();
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| message.starts_with(p));
    match error.classify() {
        Category::Syntax | Category::Eof if starts(&CONTAINER_ERRORS) => Class::Container,
        Category::Syntax | Category::Eof if starts(&PEEKED_ERRORS) => Class::Peeked,
        Category::Syntax | Category::Eof if starts(&TOKEN_ERRORS) => Class::Token,
        Category::Data if message.starts_with("unknown field") => Class::Field,
        _ => Class::Value,
    }
}

/// The path of what an error of `class` at byte `offset` is about.
fn path_at(bytes: &[u8], offset: usize, class: Class) -> String {
    match class {
        Class::Peeked => {
            let scan = Scan::run(bytes, offset.saturating_sub(1));
            if matches!(scan.state, State::AfterValue | State::Scalar) {
                // Not a peek: an enum written as an object has a second member after its value.
                scan.path(bytes, Class::Container)
            } else {
                scan.path(bytes, Class::Value)
            }
        }
        Class::Token => {
            // serde_json may have read past the token (an ident's or number's next byte, a
            // \u escape's four): the error is in the last string or scalar that started.
            let scan = Scan::run(bytes, offset);
            match scan.token_start {
                Some(start) => Scan::run(bytes, start.saturating_add(1)).path(bytes, Class::Value),
                None => scan.path(bytes, Class::Value),
            }
        }
        _ => Scan::run(bytes, offset).path(bytes, class),
    }
}

/// serde_json's message without its ` at line L column C` suffix (the path says where).
pub fn error_message(error: &serde_json::Error) -> String {
    let message = error.to_string();
    if error.line() == 0 {
        return message;
    }
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&suffix) {
        Some(bare) => bare.to_string(),
        None => message,
    }
}

/// Syntax errors about the innermost open object or array.
const CONTAINER_ERRORS: [&str; 5] = [
    "expected `,` or",
    "trailing comma",
    "trailing characters",
    "EOF while parsing a list",
    "EOF while parsing an object",
];

/// Syntax errors positioned after the byte serde_json peeked at (a value it could not start).
const PEEKED_ERRORS: [&str; 2] = ["expected value", "recursion limit exceeded"];

/// Syntax errors inside a string, number or literal.
const TOKEN_ERRORS: [&str; 9] = [
    "EOF while parsing a string",
    "expected ident",
    "invalid escape",
    "invalid number",
    "number out of range",
    "invalid unicode code point",
    "control character",
    "lone leading surrogate",
    "unexpected end of hex escape",
];

/// The byte offset of serde_json's (1-based line, byte column) in `bytes`.
fn offset_of(bytes: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    let mut newlines_to_skip = line.saturating_sub(1);
    if newlines_to_skip > 0 {
        start = bytes.len();
        for (i, byte) in bytes.iter().enumerate() {
            if *byte == b'\n' {
                newlines_to_skip -= 1;
                if newlines_to_skip == 0 {
                    start = i + 1;
                    break;
                }
            }
        }
    }
    start.saturating_add(column).min(bytes.len())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Unknown field: the key just read is the field.
    Field,
    /// About the innermost open object or array itself.
    Container,
    /// serde_json counted the byte it peeked at.
    Peeked,
    /// Inside the last string, number or literal read.
    Token,
    /// About the value at (or just before) the position.
    Value,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value must come next (the root, after `:`, after `,` in an array).
    Value,
    /// A value or `]` (just after `[`).
    ValueOrEnd,
    /// A key must come next (after `,` in an object).
    Key,
    /// A key or `}` (just after `{`).
    KeyOrEnd,
    /// Inside a string; `key` when it is an object key.
    String { key: bool, escaped: bool },
    /// Inside a number or literal.
    Scalar,
    /// After a key, before its `:`.
    AfterKey,
    /// After a complete value.
    AfterValue,
}

#[derive(Clone, Copy)]
enum Segment {
    /// An object key: the bytes between its quotes.
    Key {
        start: usize,
        end: usize,
    },
    Index(usize),
}

struct Frame {
    object: bool,
    /// The next array index.
    index: usize,
    /// The member being read, if any (none between members).
    current: Option<Segment>,
}

struct Scan {
    frames: Vec<Frame>,
    state: State,
    /// Where the scan stopped: the position, or the first byte that is not JSON.
    stop: usize,
    /// Where the last string (key or value), number or literal started.
    token_start: Option<usize>,
}

impl Scan {
    fn run(bytes: &[u8], end: usize) -> Scan {
        let mut scan = Scan {
            frames: Vec::new(),
            state: State::Value,
            stop: 0,
            token_start: None,
        };
        let mut key_start = 0;
        let mut i = 0;
        while i < end {
            let Some(&byte) = bytes.get(i) else { break };
            let whitespace = matches!(byte, b' ' | b'\t' | b'\n' | b'\r');
            let accepted = match scan.state {
                State::String { key, escaped } => {
                    scan.state = if escaped {
                        State::String {
                            key,
                            escaped: false,
                        }
                    } else if byte == b'\\' {
                        State::String { key, escaped: true }
                    } else if byte != b'"' {
                        State::String {
                            key,
                            escaped: false,
                        }
                    } else if key {
                        if let Some(frame) = scan.frames.last_mut() {
                            frame.current = Some(Segment::Key {
                                start: key_start,
                                end: i,
                            });
                        }
                        State::AfterKey
                    } else {
                        State::AfterValue
                    };
                    true
                }
                State::Scalar if is_scalar_byte(byte) => true,
                State::Scalar => {
                    // The byte ends the number or literal: read it again as what follows a value.
                    scan.state = State::AfterValue;
                    continue;
                }
                _ if whitespace => true,
                State::Value | State::ValueOrEnd => {
                    if byte == b'"' || is_scalar_byte(byte) {
                        scan.token_start = Some(i);
                    }
                    scan.value(byte)
                }
                State::Key | State::KeyOrEnd => match byte {
                    b'"' => {
                        key_start = i + 1;
                        scan.token_start = Some(i);
                        scan.state = State::String {
                            key: true,
                            escaped: false,
                        };
                        true
                    }
                    b'}' if scan.state == State::KeyOrEnd => scan.close(true),
                    _ => false,
                },
                State::AfterKey if byte == b':' => {
                    scan.state = State::Value;
                    true
                }
                State::AfterKey => false,
                State::AfterValue => scan.after_value(byte),
            };
            if !accepted {
                break;
            }
            i += 1;
        }
        scan.stop = i;
        scan
    }

    /// A value starts with `byte`, or (after `[`) the array ends.
    fn value(&mut self, byte: u8) -> bool {
        if byte == b']' && self.state == State::ValueOrEnd {
            return self.close(false);
        }
        let next = match byte {
            b'"' => State::String {
                key: false,
                escaped: false,
            },
            b'{' => State::KeyOrEnd,
            b'[' => State::ValueOrEnd,
            _ if is_scalar_byte(byte) => State::Scalar,
            _ => return false,
        };
        if let Some(frame) = self.frames.last_mut() {
            if !frame.object {
                frame.current = Some(Segment::Index(frame.index));
            }
        }
        if byte == b'{' || byte == b'[' {
            self.frames.push(Frame {
                object: byte == b'{',
                index: 0,
                current: None,
            });
        }
        self.state = next;
        true
    }

    fn after_value(&mut self, byte: u8) -> bool {
        let Some(frame) = self.frames.last_mut() else {
            // Anything after the document is trailing characters.
            return false;
        };
        match (byte, frame.object) {
            (b',', true) => {
                frame.current = None;
                self.state = State::Key;
                true
            }
            (b',', false) => {
                frame.current = None;
                frame.index = frame.index.saturating_add(1);
                self.state = State::Value;
                true
            }
            (b'}', true) => self.close(true),
            (b']', false) => self.close(false),
            _ => false,
        }
    }

    fn close(&mut self, object: bool) -> bool {
        match self.frames.last() {
            Some(frame) if frame.object == object => {
                self.frames.pop();
                self.state = State::AfterValue;
                true
            }
            _ => false,
        }
    }

    fn path(&self, bytes: &[u8], class: Class) -> String {
        let count = self.frames.len();
        let mut path = String::new();
        for (depth, frame) in self.frames.iter().enumerate() {
            let segment = if depth + 1 < count {
                frame.current
            } else {
                self.innermost(frame, bytes, class)
            };
            match segment {
                Some(Segment::Index(index)) => path.push_str(&format!("[{index}]")),
                Some(Segment::Key { start, end }) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&key_text(bytes, start, end));
                }
                None => {}
            }
        }
        if path.is_empty() {
            "(root)".to_string()
        } else {
            path
        }
    }

    /// Whether the innermost container's current member belongs in the path.
    fn innermost(&self, frame: &Frame, bytes: &[u8], class: Class) -> Option<Segment> {
        match class {
            Class::Container => None,
            Class::Field => frame.current,
            Class::Value | Class::Peeked | Class::Token => match self.state {
                State::AfterKey => None,
                State::Value | State::ValueOrEnd if !frame.object => {
                    // serde_json reports a wrong-typed `[` or `{` element before consuming it.
                    let next = bytes
                        .get(self.stop..)
                        .unwrap_or_default()
                        .iter()
                        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
                    match next {
                        Some(b']') | None => None,
                        Some(_) => Some(Segment::Index(frame.index)),
                    }
                }
                _ => frame.current,
            },
        }
    }
}

fn is_scalar_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'+' | b'.')
}

/// A key as serde reads it (escapes decoded), from the bytes between its quotes.
fn key_text(bytes: &[u8], start: usize, end: usize) -> String {
    let raw = bytes.get(start..end).unwrap_or_default();
    if !raw.contains(&b'\\') {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let quoted = bytes.get(start.saturating_sub(1)..end.saturating_add(1));
    match quoted.map(serde_json::from_slice::<String>) {
        Some(Ok(key)) => key,
        _ => String::from_utf8_lossy(raw).into_owned(),
    }
}

#[cfg(test)]
mod tests;
