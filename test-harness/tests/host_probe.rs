//! Tests of the host itself, through a hand-written probe module (WAT) whose behaviour is fixed here, so a
//! broken hostcall fails a test whatever the real filter currently does.
//!
//! The probe, per request header it finds:
//! - always: increments counter `probe.requests`, stores the clock (`proxy_get_current_time_nanoseconds`, u64 LE)
//!   in shared data `now`, and sets `x-probe-seen: 1` before continuing;
//! - `x-probe-call`: dispatches `GET /keys` to cluster `jwks` and pauses; on the response (whatever context the
//!   host delivers it to, stored as u32 LE in shared data `call-ctx`) it makes the request that dispatched the
//!   call effective again (its own token → context map, as SDKs do) and resumes it with `x-callout-status` (the
//!   call's `:status`) and `x-callout-body` (its body), or answers 503 on a failed call;
//! - `x-probe-root-call`: the same, but with the root context made effective around `proxy_http_call`;
//! - `x-probe-wait`: pauses until the next tick;
//! - `x-probe-hold`: pauses the headers until the next tick, which resumes it;
//! - `x-probe-deny`: pauses the headers until the next tick, which answers 403;
//! - every body callback increments counter `probe.bodies` and sets `x-late: 1` (always too late: a body
//!   callback only comes after the headers went upstream);
//! - `x-probe-prop`: copies property `request.id` to `x-prop-request-id` and `source.address` to `x-prop-source`;
//! - `x-probe-print`: writes "hello stdout" with WASI `fd_write`;
//! - `x-probe-random`: stores 8 bytes of `random_get` in shared data `rand`;
//! - `x-probe-trap`: executes `unreachable`; `x-probe-exit`: calls `proc_exit(3)`; `x-probe-spin`: loops forever.
//!
//! On configure it defines counters `probe.requests`, `probe.ticks` and `probe.bodies` and sets a 1000 ms tick period;
//! every tick increments `probe.ticks`.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use mlgate_harness::host::{Harness, HarnessBuilder, HostError, LogOrigin, Outcome, SharedData};

/// The ABI's serialized header map.
fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend((k.len() as u32).to_le_bytes());
        out.extend((v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend(k.as_bytes());
        out.push(0);
        out.extend(v.as_bytes());
        out.push(0);
    }
    out
}

/// Lays out constant strings in the data segment: returns WAT `(data …)` lines and offset/length per name.
struct Data {
    next: u32,
    wat: String,
    names: Vec<(&'static str, u32, u32)>,
}

impl Data {
    fn new() -> Self {
        Data {
            next: 1024,
            wat: String::new(),
            names: Vec::new(),
        }
    }
    fn add(&mut self, name: &'static str, bytes: &[u8]) {
        let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
        self.wat.push_str(&format!(
            "  (data (i32.const {}) \"{escaped}\")\n",
            self.next
        ));
        self.names.push((name, self.next, bytes.len() as u32));
        self.next += bytes.len() as u32 + 8;
    }
    /// `(i32.const off) (i32.const len)` for a name.
    fn arg(&self, name: &str) -> String {
        let (_, off, len) = self
            .names
            .iter()
            .find(|(n, _, _)| *n == name)
            .copied()
            .unwrap();
        format!("(i32.const {off}) (i32.const {len})")
    }
}

fn probe_wat() -> String {
    let mut d = Data::new();
    for name in [
        "x-probe-call",
        "x-probe-wait",
        "x-probe-hold",
        "x-probe-deny",
        "x-probe-root-call",
        "call-ctx",
        "probe.bodies",
        "x-probe-prop",
        "x-probe-print",
        "x-probe-random",
        "x-probe-trap",
        "x-probe-exit",
        "x-probe-spin",
        "x-probe-seen",
        "x-late",
        "x-callout-status",
        "x-callout-body",
        "x-prop-request-id",
        "x-prop-source",
        ":status",
        "now",
        "rand",
        "jwks",
        "probe.requests",
        "probe.ticks",
        "1",
        "deleted",
    ] {
        d.add(name, name.as_bytes());
    }
    d.add("request.id", b"request\0id");
    d.add("source.address", b"source\0address");
    d.add("hello", b"hello stdout\n");
    d.add(
        "call-headers",
        &serialize(&[
            (":method", "GET"),
            (":path", "/keys"),
            (":authority", "idp.example"),
        ]),
    );
    let a = |n: &str| d.arg(n);
    format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_ctx (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $respond (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc_metric (param i32 i64) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 4)
{data}
  (global $heap (mut i32) (i32.const 65536))
  (global $waiting (mut i32) (i32.const 0))
  (global $reply (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func $has (param $name i32) (param $len i32) (result i32)
    (i32.eqz (call $get_header (i32.const 0) (local.get $name) (local.get $len) (i32.const 4096) (i32.const 4100))))
  ;; sets request header (name) to the bytes last returned at 4096/4100
  (func $set_from_return (param $name i32) (param $len i32)
    (drop (call $replace (i32.const 0) (local.get $name) (local.get $len) (i32.load (i32.const 4096)) (i32.load (i32.const 4100)))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $define_metric (i32.const 0) {requests} (i32.const 4200)))
    (drop (call $define_metric (i32.const 0) {ticks} (i32.const 4204)))
    (drop (call $define_metric (i32.const 0) {bodies} (i32.const 4208)))
    (drop (call $set_tick (i32.const 1000)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (drop (call $inc_metric (i32.load (i32.const 4200)) (i64.const 1)))
    (drop (call $now (i32.const 4104)))
    (drop (call $set_shared {now} (i32.const 4104) (i32.const 8) (i32.const 0)))
    (if (call $has {trap}) (then unreachable))
    (if (call $has {exit}) (then (call $proc_exit (i32.const 3))))
    (if (call $has {spin}) (then (loop $forever (br $forever))))
    (if (call $has {print}) (then
      (i32.store (i32.const 4300) (i32.const {hello_off}))
      (i32.store (i32.const 4304) (i32.const {hello_len}))
      (drop (call $fd_write (i32.const 1) (i32.const 4300) (i32.const 1) (i32.const 4308)))))
    (if (call $has {random}) (then
      (drop (call $random_get (i32.const 4400) (i32.const 8)))
      (drop (call $set_shared {rand} (i32.const 4400) (i32.const 8) (i32.const 0)))))
    (if (call $has {prop}) (then
      (if (i32.eqz (call $get_property {request_id} (i32.const 4096) (i32.const 4100))) (then (call $set_from_return {prop_request_id})))
      (if (i32.eqz (call $get_property {source} (i32.const 4096) (i32.const 4100))) (then (call $set_from_return {prop_source})))))
    (if (call $has {call}) (then
      (drop (call $http_call {jwks} {call_headers} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 4116)))
      ;; remember which request made call <token>
      (i32.store (i32.add (i32.const 8192) (i32.mul (i32.load (i32.const 4116)) (i32.const 4))) (local.get $ctx))
      (return (i32.const 1))))
    (if (call $has {root_call}) (then
      (drop (call $set_ctx (i32.const 1)))
      (drop (call $http_call {jwks} {call_headers} (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 4116)))
      (drop (call $set_ctx (local.get $ctx)))
      (i32.store (i32.add (i32.const 8192) (i32.mul (i32.load (i32.const 4116)) (i32.const 4))) (local.get $ctx))
      (return (i32.const 1))))
    (if (call $has {deny}) (then (global.set $waiting (local.get $ctx)) (global.set $reply (i32.const 1)) (return (i32.const 1))))
    (if (call $has {wait}) (then (global.set $waiting (local.get $ctx)) (return (i32.const 1))))
    (drop (call $replace (i32.const 0) {seen} {one}))
    (if (call $has {hold}) (then (global.set $waiting (local.get $ctx)) (return (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (drop (call $inc_metric (i32.load (i32.const 4208)) (i64.const 1)))
    (drop (call $replace (i32.const 0) {late} {one}))
    (i32.const 0))
  (func (export "proxy_on_http_call_response") (param $ctx i32) (param $token i32) (param $nh i32) (param $nb i32) (param $nt i32)
    (i32.store (i32.const 4120) (local.get $ctx))
    (drop (call $set_shared {call_ctx} (i32.const 4120) (i32.const 4) (i32.const 0)))
    (drop (call $set_ctx (i32.load (i32.add (i32.const 8192) (i32.mul (local.get $token) (i32.const 4))))))
    (if (i32.eqz (local.get $nh)) (then
      (drop (call $respond (i32.const 503) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))
      (return)))
    (drop (call $get_header (i32.const 6) {status} (i32.const 4096) (i32.const 4100)))
    (call $set_from_return {callout_status})
    (drop (call $get_buffer (i32.const 4) (i32.const 0) (local.get $nb) (i32.const 4096) (i32.const 4100)))
    (call $set_from_return {callout_body})
    (drop (call $continue (i32.const 0))))
  (func (export "proxy_on_tick") (param i32)
    (drop (call $inc_metric (i32.load (i32.const 4204)) (i64.const 1)))
    (if (global.get $waiting) (then
      (drop (call $set_ctx (global.get $waiting)))
      (if (global.get $reply)
        (then
          (drop (call $respond (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))
          (global.set $reply (i32.const 0)))
        (else (drop (call $continue (i32.const 0)))))
      (global.set $waiting (i32.const 0)))))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)
    (drop (call $log (i32.const 2) {deleted})))
)"#,
        data = d.wat,
        requests = a("probe.requests"),
        ticks = a("probe.ticks"),
        bodies = a("probe.bodies"),
        deny = a("x-probe-deny"),
        root_call = a("x-probe-root-call"),
        call_ctx = a("call-ctx"),
        now = a("now"),
        trap = a("x-probe-trap"),
        exit = a("x-probe-exit"),
        spin = a("x-probe-spin"),
        print = a("x-probe-print"),
        hello_off = d.names.iter().find(|n| n.0 == "hello").unwrap().1,
        hello_len = d.names.iter().find(|n| n.0 == "hello").unwrap().2,
        random = a("x-probe-random"),
        rand = a("rand"),
        prop = a("x-probe-prop"),
        request_id = a("request.id"),
        source = a("source.address"),
        prop_request_id = a("x-prop-request-id"),
        prop_source = a("x-prop-source"),
        call = a("x-probe-call"),
        jwks = a("jwks"),
        call_headers = a("call-headers"),
        wait = a("x-probe-wait"),
        seen = a("x-probe-seen"),
        one = a("1"),
        hold = a("x-probe-hold"),
        late = a("x-late"),
        status = a(":status"),
        callout_status = a("x-callout-status"),
        callout_body = a("x-callout-body"),
        deleted = a("deleted"),
    )
}

/// Writes a module once per process and returns its path.
fn module_file(name: &str, wat: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{name}-{}.wasm", std::process::id()));
    if !path.exists() {
        let bytes = wat::parse_str(wat).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tmp = dir.join(format!(
            "{name}-{}-{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

fn probe() -> HarnessBuilder {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    Harness::builder().wasm(PATH.get_or_init(|| module_file("probe", &probe_wat())))
}

fn configured(builder: HarnessBuilder) -> Harness {
    builder.load().unwrap().configure("{}").unwrap()
}

#[test]
fn a_request_that_continues_is_forwarded_with_the_headers_the_filter_set() {
    let h = configured(probe());
    let out = h
        .request()
        .method("POST")
        .path("/score?x=1")
        .host("ml.example.com")
        .header("X-Client", "a")
        .send()
        .unwrap();
    assert!(out.is_forwarded(), "{out}");
    assert_eq!(out.forwarded_header("x-probe-seen"), Some("1"));
    assert_eq!(
        out.forwarded_header("x-client"),
        Some("a"),
        "names are lower-cased, lookups case-insensitive"
    );
    assert_eq!(out.forwarded_header(":path"), Some("/score?x=1"));
    assert_eq!(out.forwarded_header(":method"), Some("POST"));
    assert_eq!(out.forwarded_header(":authority"), Some("ml.example.com"));
    assert_eq!(out.status(), None);
    assert!(h.pending_requests().is_empty());
    // on_delete ran in the request's context
    assert_eq!(out.logs_containing("deleted").len(), 1, "{out}");
    assert_eq!(h.metric("probe.requests"), Some(1));
}

#[test]
fn header_changes_after_the_headers_went_upstream_do_not_reach_it() {
    let h = configured(probe());
    let early = h.request().body("abc").send().unwrap();
    assert_eq!(
        early.forwarded_header("x-late"),
        None,
        "headers continued before the body callback: {early}"
    );
    assert_eq!(early.body(), b"abc");
    assert_eq!(early.forwarded_header("content-length"), Some("3"));
    assert_eq!(h.metric("probe.bodies"), Some(1));
}

/// Envoy turns `StopIteration` from the headers callback into `StopAllIterationAndWatermark`: no body
/// callback while the headers are held; the buffered body comes after the filter resumes the request.
#[test]
fn no_body_callback_while_the_headers_are_paused_and_the_body_follows_the_resume() {
    let h = configured(probe().no_body_while_headers_held());
    let held = h
        .request()
        .header("x-probe-hold", "")
        .body("abc")
        .send()
        .unwrap();
    assert!(held.is_paused(), "{held}");
    assert_eq!(
        h.metric("probe.bodies"),
        Some(0),
        "body delivered while paused"
    );
    assert_eq!(h.pending_requests().len(), 1);
    h.tick().unwrap();
    let done = h.outcome(held.context_id()).unwrap();
    assert!(done.is_forwarded(), "{done}");
    assert_eq!(
        h.metric("probe.bodies"),
        Some(1),
        "the body follows the resume"
    );
    assert_eq!(done.body(), b"abc");
    assert_eq!(
        done.forwarded_header("x-late"),
        None,
        "the headers went upstream at the resume, before the body callback: {done}"
    );
    assert_eq!(done.forwarded_header("x-probe-seen"), Some("1"));
}

#[test]
fn a_body_held_behind_paused_headers_is_never_delivered_when_the_filter_answers() {
    let h = configured(probe().no_body_while_headers_held());
    let denied = h
        .request()
        .header("x-probe-deny", "")
        .body("abc")
        .trailer("x-t", "1")
        .send()
        .unwrap();
    assert!(denied.is_paused(), "{denied}");
    h.tick().unwrap();
    let done = h.outcome(denied.context_id()).unwrap();
    assert_eq!(done.status(), Some(403), "{done}");
    assert_eq!(h.metric("probe.bodies"), Some(0));
    assert!(h.pending_requests().is_empty());
}

#[test]
fn a_paused_request_resumes_when_its_callout_is_answered() {
    let h = configured(probe());
    let out = h
        .request()
        .path("/a")
        .header("x-probe-call", "")
        .send()
        .unwrap();
    assert!(out.is_paused(), "{out}");
    let pending = h.pending_requests();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].path(), Some("/a"));
    let calls = h.pending_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.cluster, "jwks");
    assert_eq!(
        (call.method(), call.path(), call.authority()),
        (Some("GET"), Some("/keys"), Some("idp.example"))
    );
    assert_eq!(call.timeout, Duration::from_secs(5));
    assert_eq!(call.context_id, out.context_id());

    h.respond_call(
        call.token,
        200,
        &[("content-type", "application/json")],
        b"{\"keys\":[]}",
    )
    .unwrap();
    let done = h.outcome(out.context_id()).unwrap();
    assert!(done.is_forwarded(), "{done}");
    assert_eq!(done.forwarded_header("x-callout-status"), Some("200"));
    assert_eq!(
        done.forwarded_header("x-callout-body"),
        Some("{\"keys\":[]}")
    );
    assert!(h.pending_calls().is_empty() && h.pending_requests().is_empty());
    assert!(matches!(
        h.respond_call(call.token, 200, &[], b""),
        Err(HostError::UnknownCall(_))
    ));
}

#[test]
fn a_failed_callout_reaches_the_filter_without_status() {
    let h = configured(probe());
    let out = h.request().header("x-probe-call", "").send().unwrap();
    let token = h.pending_calls()[0].token;
    h.fail_call(token).unwrap();
    let done = h.outcome(out.context_id()).unwrap();
    assert_eq!(done.status(), Some(503), "{done}");
}

/// proxy-wasm-cpp-host's `http_call` dispatches on `contextOrEffectiveContext()->root_context()`: the answer
/// comes to the root context whatever context was effective, and the call survives the request.
#[test]
fn callout_answers_arrive_in_the_root_context_and_outlive_the_request() {
    let h = configured(probe());
    let ctx_of_answer = |h: &Harness| {
        let bytes = h.shared_data("call-ctx").expect("an answer arrived");
        u32::from_le_bytes(bytes[..4].try_into().unwrap())
    };
    // Dispatched with the request effective: answered on the root, routed back by the probe's token map.
    let own = h.request().header("x-probe-call", "").send().unwrap();
    let call = h.pending_calls()[0].clone();
    assert_eq!(call.context_id, own.context_id());
    h.respond_call(call.token, 200, &[], b"k").unwrap();
    assert_eq!(ctx_of_answer(&h), mlgate_harness::host::ROOT_CONTEXT_ID);
    assert!(h.outcome(own.context_id()).unwrap().is_forwarded());

    // Dispatched with the root context made effective; the client then hangs up.
    let rooted = h.request().header("x-probe-root-call", "").send().unwrap();
    assert!(rooted.is_paused(), "{rooted}");
    let call = h.pending_calls()[0].clone();
    assert_eq!(call.context_id, mlgate_harness::host::ROOT_CONTEXT_ID);
    h.disconnect(rooted.context_id()).unwrap();
    let gone = h.outcome(rooted.context_id()).unwrap();
    assert!(matches!(gone, Outcome::Reset { .. }), "{gone}");
    assert_eq!(gone.logs_containing("deleted").len(), 1, "{gone}");
    assert_eq!(
        h.pending_calls(),
        vec![call.clone()],
        "the call outlives the request"
    );
    h.shared()
        .set(h.vm_id(), "call-ctx", &[0, 0, 0, 0], 0)
        .unwrap();
    h.respond_call(call.token, 200, &[], b"k").unwrap();
    assert_eq!(ctx_of_answer(&h), mlgate_harness::host::ROOT_CONTEXT_ID);
    assert!(h.disconnect(rooted.context_id()).is_err());
    // The VM is fine.
    assert!(h.request().send().unwrap().is_forwarded());
}

#[test]
fn one_paused_request_does_not_hold_up_others() {
    let h = configured(probe());
    let a = h
        .request()
        .path("/a")
        .header("x-probe-call", "")
        .send()
        .unwrap();
    let b = h
        .request()
        .path("/b")
        .header("x-probe-call", "")
        .send()
        .unwrap();
    let c = h.request().path("/c").send().unwrap();
    assert!(a.is_paused() && b.is_paused());
    assert!(c.is_forwarded());
    assert_eq!(h.pending_requests().len(), 2);
    let calls = h.pending_calls();
    let call_b = calls
        .iter()
        .find(|c| c.context_id == b.context_id())
        .unwrap();
    h.respond_call(call_b.token, 204, &[], b"").unwrap();
    assert_eq!(
        h.outcome(b.context_id())
            .unwrap()
            .forwarded_header("x-callout-status"),
        Some("204")
    );
    assert!(h.outcome(a.context_id()).unwrap().is_paused());
    assert_eq!(h.pending_requests()[0].context_id, a.context_id());
}

#[test]
fn ticks_fire_only_when_asked_and_can_resume_requests() {
    let h = configured(probe());
    assert_eq!(h.tick_period(), Some(Duration::from_millis(1000)));
    assert_eq!(h.metric("probe.ticks"), Some(0));
    let out = h.request().header("x-probe-wait", "").send().unwrap();
    assert!(out.is_paused());
    assert!(h.tick().unwrap());
    assert_eq!(h.metric("probe.ticks"), Some(1));
    assert!(h.outcome(out.context_id()).unwrap().is_forwarded());
}

#[test]
fn the_clock_is_frozen_settable_and_advanceable() {
    let h = configured(probe().time(1_700_000_000u64));
    let now = |h: &Harness| u64::from_le_bytes(h.shared_data("now").unwrap().try_into().unwrap());
    h.request().send().unwrap();
    assert_eq!(now(&h), 1_700_000_000 * 1_000_000_000);
    h.request().send().unwrap();
    assert_eq!(now(&h), 1_700_000_000 * 1_000_000_000, "frozen");
    h.advance(Duration::from_millis(1500));
    h.request().send().unwrap();
    assert_eq!(now(&h), 1_700_000_001_500_000_000);
    h.set_time(UNIX_EPOCH + Duration::from_secs(42));
    h.request().send().unwrap();
    assert_eq!(now(&h), 42_000_000_000);
    assert_eq!(h.now_unix(), 42);
}

#[test]
fn the_default_clock_is_the_real_time_at_creation() {
    let before = std::time::SystemTime::now();
    let h = configured(probe());
    let after = std::time::SystemTime::now();
    assert!(h.now() >= before && h.now() <= after);
}

#[test]
fn vms_built_on_one_shared_store_share_data_and_metrics() {
    let shared = SharedData::new();
    let a = configured(probe().shared(shared.clone()).time(1000u64));
    let b = configured(probe().shared(shared.clone()).time(2000u64));
    a.request().send().unwrap();
    assert_eq!(
        shared.get("mlgate", "now").unwrap().0,
        (1000u64 * 1_000_000_000).to_le_bytes()
    );
    b.request().send().unwrap();
    assert_eq!(
        a.shared_data("now").unwrap(),
        (2000u64 * 1_000_000_000).to_le_bytes()
    );
    assert_eq!(a.metric("probe.requests"), Some(2));
    // a separate store sees nothing of it
    let c = configured(probe());
    assert_eq!(c.shared_data("now"), None);
    assert_eq!(c.metric("probe.requests"), Some(0));
}

#[test]
fn properties_come_from_the_request_and_the_builder() {
    let h = configured(probe());
    let out = h
        .request()
        .header("x-probe-prop", "")
        .request_id("req-7")
        .send()
        .unwrap();
    assert_eq!(out.forwarded_header("x-prop-request-id"), Some("req-7"));
    assert_eq!(
        out.forwarded_header("x-prop-source"),
        Some("192.0.2.10:43210")
    );
    let out = h
        .request()
        .header("x-probe-prop", "")
        .source_address("10.9.8.7:1234")
        .send()
        .unwrap();
    assert_eq!(
        out.forwarded_header("x-prop-request-id"),
        None,
        "no x-request-id: NotFound"
    );
    assert_eq!(out.forwarded_header("x-prop-source"), Some("10.9.8.7:1234"));
}

#[test]
fn stdout_is_captured_as_log_lines() {
    let h = configured(probe());
    let out = h.request().header("x-probe-print", "").send().unwrap();
    let lines = out.logs_containing("hello stdout");
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0].origin, LogOrigin::Stdout);
    assert_eq!(lines[0].message, "hello stdout");
}

#[test]
fn random_bytes_are_deterministic_per_seed() {
    let bytes = |seed| {
        let h = configured(probe().seed(seed));
        h.request().header("x-probe-random", "").send().unwrap();
        h.shared_data("rand").unwrap()
    };
    assert_eq!(bytes(1), bytes(1));
    assert_ne!(bytes(1), bytes(2));
}

#[test]
fn a_trap_is_an_error_naming_the_callback_and_the_vm_stays_dead() {
    let h = configured(probe());
    let err = h.request().header("x-probe-trap", "").send().unwrap_err();
    match &err {
        HostError::Trap { callback, .. } => assert_eq!(callback, "proxy_on_request_headers"),
        other => panic!("expected a trap, got {other}"),
    }
    assert!(matches!(h.request().send(), Err(HostError::Poisoned(_))));
}

#[test]
fn proc_exit_traps() {
    let h = configured(probe());
    let err = h.request().header("x-probe-exit", "").send().unwrap_err();
    assert!(err.to_string().contains("proc_exit(3)"), "{err}");
}

#[test]
fn a_callback_that_never_returns_times_out_instead_of_hanging() {
    let h = configured(probe().callback_timeout(Duration::from_millis(200)));
    let err = h.request().header("x-probe-spin", "").send().unwrap_err();
    assert!(err.to_string().contains("ran out of time"), "{err}");
}

#[test]
fn harnesses_run_in_parallel_without_sharing_state() {
    let threads: Vec<_> = (0..4u64)
        .map(|i| {
            std::thread::spawn(move || {
                let h = configured(probe().time(1000 + i));
                for _ in 0..=i {
                    assert!(h.request().send().unwrap().is_forwarded());
                }
                (h.metric("probe.requests"), h.shared_data("now"))
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (requests, now) = t.join().unwrap();
        assert_eq!(requests, Some(i as i64 + 1));
        assert_eq!(
            now.unwrap(),
            ((1000 + i as u64) * 1_000_000_000).to_le_bytes()
        );
    }
}

#[test]
fn a_module_importing_an_unknown_hostcall_is_refused_at_load_naming_it() {
    let wat = r#"(module
      (import "env" "proxy_from_the_future" (func))
      (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_0_2_1")))"#;
    let err = Harness::builder()
        .wasm(module_file("future", wat))
        .load()
        .unwrap_err();
    match &err {
        HostError::MissingImports { missing, .. } => {
            assert_eq!(
                missing,
                &[
                    "env::proxy_from_the_future",
                    "wasi_snapshot_preview1::sock_accept"
                ]
            )
        }
        other => panic!("expected MissingImports, got {other}"),
    }
    assert!(err.to_string().contains("env::proxy_from_the_future"));
}

#[test]
fn a_module_without_the_abi_version_export_is_refused() {
    let wat = r#"(module (memory (export "memory") 1))"#;
    let err = Harness::builder()
        .wasm(module_file("noabi", wat))
        .load()
        .unwrap_err();
    assert!(err.to_string().contains("proxy_abi_version_0_2_1"), "{err}");
}

#[test]
fn outcome_helpers_read_json_bodies() {
    let out = Outcome::Responded {
        context_id: 2,
        status: 401,
        headers: [("www-authenticate", "Bearer realm=\"mlgate\"")]
            .into_iter()
            .collect(),
        body: br#"{"error":"unauthorized","reason":"missing_token"}"#.to_vec(),
        details: String::new(),
        upstream_headers: None,
        logs: Vec::new(),
    };
    assert_eq!(out.reason().as_deref(), Some("missing_token"));
    assert!(!out.reached_upstream());
    assert_eq!(out.body_json()["error"], "unauthorized");
    assert_eq!(
        out.response_header("WWW-Authenticate"),
        Some("Bearer realm=\"mlgate\"")
    );
    assert!(!out.is_forwarded() && out.forwarded_header("x").is_none());
}
