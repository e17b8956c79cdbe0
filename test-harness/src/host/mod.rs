//! placeholder: the wasmtime proxy-wasm host.
