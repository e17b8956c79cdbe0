//! mlgate: placeholder while the core is written.
#[cfg(target_arch = "wasm32")]
mod filter;
