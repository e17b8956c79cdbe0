//! `mlgate-harness bench`: time per request inside wasmtime, per scenario, for quick before/after
//! comparisons while optimizing (seconds, no Envoy). `make bench` is the real measurement (Envoy, V8).
//!
//! Scenarios, as in `make bench` (configuration `envoy/bench/mlgate-bench.json`, tokens from
//! [`crate::bench_tokens`]):
//! - `hit`: one valid token repeated on `GET /score` (after warm-up: the verified-token cache's hit path);
//! - `fresh`: a distinct valid token per request (cold verification);
//! - `forged`: distinct well-formed tokens with random signatures (401);
//! - `denied`: the repeated valid token on `GET /admin`, a route its groups do not allow (403).
//!
//! With `--floor` the empty filter (`mlgate_noop_filter.wasm`) runs the same requests: the harness's own cost
//! per request, to subtract. wasmtime ranks builds differently from V8: confirm with `make bench`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::bench_tokens::{forged_tokens, valid_tokens};
use crate::host::host_crypto::{verify_signature, VERIFY_SIGNATURE};
use crate::host::{workspace_root, Harness};
use crate::mint::{bearer, now_unix};

const HELP: &str = "usage: mlgate-harness bench [options]

Times mlgate.wasm inside wasmtime for each scenario and prints microseconds per request
(mean, median, p99), requests per second of one core, and the WebAssembly operators each request
executes (wasmtime fuel, counted in a second, metered instance: unlike time, the same on a busy
machine, so the number to compare before and after a change).

scenarios: hit (one token repeated), fresh (a new valid token per request), forged (random
signatures: 401), denied (valid token, forbidden route: 403)

options:
  --scenario NAME         run only this scenario (hit, fresh, forged, denied; default: all)
  --iterations N          requests per scenario (default 2000)
  --config FILE           filter configuration (default envoy/bench/mlgate-bench.json)
  --wasm FILE             the module (default: $MLGATE_WASM or target/mlgate.wasm)
  --without-host-crypto   no verify_signature foreign function (the pure-Rust fallback path)
  --floor                 also time the empty filter (target/wasm32-wasip1/wasm/mlgate_noop_filter.wasm;
                          build: cargo build --profile wasm --target wasm32-wasip1 -p mlgate-noop-filter)
  --floor-wasm FILE       the empty filter from elsewhere
  --segments              also print, for one more request of each scenario, the operators between
                          consecutive host calls and callback entries/returns: where a request's work is

Host calls are not in the operator count (the host's verify_signature is timed separately).
";

/// The scenarios, in the order they run.
pub const SCENARIOS: [&str; 4] = ["hit", "fresh", "forged", "denied"];

struct Options {
    scenarios: Vec<String>,
    iterations: usize,
    config: PathBuf,
    wasm: Option<PathBuf>,
    host_crypto: bool,
    floor: Option<PathBuf>,
    /// `--segments`: operators between host calls, for one request per scenario.
    segments: bool,
}

/// Timings of one scenario.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Scenario name.
    pub scenario: String,
    /// Requests timed.
    pub iterations: usize,
    /// Mean time per request.
    pub mean: Duration,
    /// Median time per request.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Mean time per request spent in the host's `verify_signature` (native RustCrypto here; BoringSSL in
    /// Envoy), included in `mean`.
    pub host_crypto: Duration,
    /// `verify_signature` calls per request.
    pub host_calls: f64,
    /// WebAssembly operators per request, if the harness counts them.
    pub wasm_ops: Option<f64>,
}

/// Time and calls spent in the harness's `verify_signature`, in nanoseconds.
#[derive(Default)]
struct HostCryptoMeter {
    nanos: AtomicU64,
    calls: AtomicU64,
}

impl HostCryptoMeter {
    fn read(&self) -> (u64, u64) {
        (
            self.nanos.load(Ordering::Relaxed),
            self.calls.load(Ordering::Relaxed),
        )
    }
}

fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
    let root = workspace_root();
    let mut o = Options {
        scenarios: SCENARIOS.iter().map(|s| s.to_string()).collect(),
        iterations: 2000,
        config: root.join("envoy/bench/mlgate-bench.json"),
        wasm: None,
        host_crypto: true,
        floor: None,
        segments: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{flag} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            "--scenario" => {
                let s = value("--scenario")?;
                if !SCENARIOS.contains(&s.as_str()) {
                    bail!("unknown scenario {s:?}: one of {SCENARIOS:?}");
                }
                o.scenarios = vec![s];
            }
            "--iterations" => {
                o.iterations = value("--iterations")?.parse().context("--iterations")?;
                if o.iterations == 0 {
                    bail!("--iterations must be at least 1");
                }
            }
            "--config" => o.config = value("--config")?.into(),
            "--wasm" => o.wasm = Some(value("--wasm")?.into()),
            "--without-host-crypto" => o.host_crypto = false,
            "--floor" => {
                o.floor = Some(root.join("target/wasm32-wasip1/wasm/mlgate_noop_filter.wasm"))
            }
            "--floor-wasm" => o.floor = Some(value("--floor-wasm")?.into()),
            "--segments" => o.segments = true,
            other => bail!("unknown option {other:?}\n{HELP}"),
        }
    }
    Ok(Some(o))
}

/// What a scenario's requests must get: forwarded (200) or the filter's own status.
fn expected_status(scenario: &str) -> u32 {
    match scenario {
        "forged" => 401,
        "denied" => 403,
        _ => 200,
    }
}

fn path_of(scenario: &str) -> &'static str {
    if scenario == "denied" {
        "/admin"
    } else {
        "/score"
    }
}

/// One request; its status as the client would see it (200 when forwarded).
fn send(h: &Harness, path: &str, token: &str) -> anyhow::Result<u32> {
    let out = h
        .request()
        .method("GET")
        .path(path)
        .host("bench.local")
        .header("authorization", &bearer(token))
        .send()?;
    // Per-request log lines would pile up in the harness and slow later requests: drop them.
    h.clear_logs();
    if out.is_forwarded() {
        Ok(200)
    } else {
        out.status()
            .ok_or_else(|| anyhow!("neither forwarded nor answered: {out:?}"))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Times `iterations` requests of `scenario` on a harness (after a warm-up); `check` compares statuses.
fn time_scenario(
    h: &Harness,
    meter: &HostCryptoMeter,
    scenario: &str,
    iterations: usize,
    check: bool,
) -> anyhow::Result<Timing> {
    let now = now_unix();
    let one = valid_tokens(1, now, 3600).concat();
    let tokens: Vec<String> = match scenario {
        "fresh" => valid_tokens(iterations, now, 3600),
        "forged" => forged_tokens(iterations, now, 3600),
        _ => vec![one.clone()],
    };
    let path = path_of(scenario);
    let want = expected_status(scenario);
    // Warm-up: the repeated token (cached from here on), whatever the scenario.
    for _ in 0..50 {
        send(h, path_of("hit"), &one)?;
    }
    if let Some(first) = tokens.first() {
        let got = send(h, path, first)?;
        if check && got != want {
            bail!("scenario {scenario}: expected {want}, got {got} (is the module configured with envoy/bench/mlgate-bench.json?)");
        }
    }
    let mut times = Vec::with_capacity(iterations);
    let mut wrong = 0usize;
    let (nanos0, calls0) = meter.read();
    let ops0 = h.wasm_operators();
    for i in 0..iterations {
        let token = tokens
            .get(i % tokens.len().max(1))
            .map_or(one.as_str(), String::as_str);
        let t = Instant::now();
        let got = send(h, path, token)?;
        times.push(t.elapsed());
        if got != want {
            wrong += 1;
        }
    }
    if check && wrong > 0 {
        bail!("scenario {scenario}: {wrong} of {iterations} requests did not get {want}");
    }
    let (nanos1, calls1) = meter.read();
    let wasm_ops = ops0
        .zip(h.wasm_operators())
        .map(|(before, after)| (after - before) as f64 / iterations.max(1) as f64);
    let total: Duration = times.iter().sum();
    times.sort();
    let n = iterations.max(1) as u64;
    Ok(Timing {
        scenario: scenario.to_string(),
        iterations,
        mean: total / iterations.max(1) as u32,
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        host_crypto: Duration::from_nanos((nanos1 - nanos0) / n),
        host_calls: (calls1 - calls0) as f64 / n as f64,
        wasm_ops,
    })
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `mlgate-harness bench …`: see `HELP`.
pub fn cli(args: &[String]) -> anyhow::Result<ExitCode> {
    let Some(o) = parse(args)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let config = std::fs::read_to_string(&o.config)
        .with_context(|| format!("reading {}", o.config.display()))?;
    let meter = Arc::new(HostCryptoMeter::default());
    let mut builder = Harness::builder();
    if let Some(w) = &o.wasm {
        builder = builder.wasm(w);
    }
    if o.host_crypto {
        // The default verify_signature, timed: the host's share of a request (BoringSSL in Envoy: ~20 µs per
        // RS256 check; RustCrypto here, built with the workspace's size-optimised release profile: slower).
        let m = meter.clone();
        builder = builder.foreign_function(VERIFY_SIGNATURE, move |args| {
            let t = Instant::now();
            let out = verify_signature(args);
            m.nanos
                .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            m.calls.fetch_add(1, Ordering::Relaxed);
            out
        });
    } else {
        builder = builder.without_host_crypto();
    }
    let h = builder.load()?.configure(config.as_str())?;
    // The operator count comes from a second instance compiled with metering (slower: never timed).
    let mut counting = Harness::builder().count_wasm_operators();
    if let Some(w) = &o.wasm {
        counting = counting.wasm(w);
    }
    if !o.host_crypto {
        counting = counting.without_host_crypto();
    }
    let counter = counting.load()?.configure(config.as_str())?;
    let uncounted = HostCryptoMeter::default();
    let floor = match &o.floor {
        Some(path) => {
            if !path.is_file() {
                bail!("{} is missing: cargo build --profile wasm --target wasm32-wasip1 -p mlgate-noop-filter", path.display());
            }
            let timed = Harness::builder().wasm(path).load()?.configure("{}")?;
            let counted = Harness::builder()
                .wasm(path)
                .count_wasm_operators()
                .load()?
                .configure("{}")?;
            Some((timed, counted))
        }
        None => None,
    };
    println!(
        "mlgate-harness bench: {} iterations per scenario, host crypto {}, config {}",
        o.iterations,
        if o.host_crypto { "on" } else { "off" },
        o.config.display()
    );
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>12} {:>16} {:>12} {:>10}{}",
        "scenario",
        "mean µs",
        "p50 µs",
        "p99 µs",
        "req/s/core",
        "host verify µs",
        "wasm side µs",
        "wasm ops",
        if floor.is_some() {
            "   floor µs   mlgate−floor µs   floor ops"
        } else {
            ""
        }
    );
    for scenario in &o.scenarios {
        let t = time_scenario(&h, &meter, scenario, o.iterations, true)?;
        let counted = time_scenario(&counter, &uncounted, scenario, o.iterations.min(500), true)?;
        let ops = counted
            .wasm_ops
            .ok_or_else(|| anyhow!("the metered instance counted no operators"))?;
        let mut line = format!(
            "{:<8} {:>10.1} {:>10.1} {:>10.1} {:>12.0} {:>9.1} ({:.2}×) {:>12.1} {:>10.0}",
            t.scenario,
            us(t.mean),
            us(t.p50),
            us(t.p99),
            1.0 / t.mean.as_secs_f64().max(1e-12),
            us(t.host_crypto),
            t.host_calls,
            us(t.mean) - us(t.host_crypto),
            ops
        );
        if let Some((timed, counted)) = &floor {
            let ft = time_scenario(timed, &meter, scenario, o.iterations.min(2000), false)?;
            let fc = time_scenario(counted, &uncounted, scenario, o.iterations.min(500), false)?;
            line += &format!(
                "   {:>8.1}   {:>15.1}   {:>9.0}",
                us(ft.mean),
                us(t.mean) - us(ft.mean),
                fc.wasm_ops.unwrap_or(0.0)
            );
        }
        println!("{line}");
    }
    if o.segments {
        for scenario in &o.scenarios {
            print_segments(&counter, scenario)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One more request of `scenario` on the metered harness, marked: the operators between each
/// host call or callback entry/return and the one before it.
fn print_segments(counter: &Harness, scenario: &str) -> anyhow::Result<()> {
    // A token this harness has not seen (fresh, forged), or one it has cached (hit, denied: a
    // token is cached on its second verification).
    let later = now_unix() + 7;
    let token = match scenario {
        "fresh" => valid_tokens(1, later, 3600).concat(),
        "forged" => forged_tokens(1, later, 3600).concat(),
        _ => {
            let token = valid_tokens(1, later, 3600).concat();
            for _ in 0..2 {
                send(counter, path_of(scenario), &token)?;
            }
            token
        }
    };
    counter.mark_operators();
    send(counter, path_of(scenario), &token)?;
    let marks = counter.take_operator_marks();
    println!("\n{scenario}: wasm operators between host calls (one request)");
    let mut previous: Option<&(u64, String)> = None;
    for mark in &marks {
        let (ops, what) = mark;
        if let Some((before, from)) = previous {
            println!("{:>9}  {from} → {what}", ops - before);
        }
        previous = Some(mark);
    }
    if let (Some((first, _)), Some((last, _))) = (marks.first(), marks.last()) {
        println!("{:>9}  in all", last - first);
    }
    Ok(())
}
