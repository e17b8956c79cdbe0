//! mlgate-harness: placeholder.
