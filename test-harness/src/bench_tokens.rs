//! Tokens for the benchmarks (`make bench`, `mlgate-harness bench`), and the `bench-tokens` subcommand.
//!
//! Every token matches `envoy/bench/mlgate-bench.json` and the native chains of `envoy/bench/`: issuer
//! [`ISSUER`], audience [`AUDIENCE`], RS256 with the test key `rsa-a`, groups `[ml-scientists, …]` (allowed
//! on `/score`, not on `/admin`). Each carries a distinct `jti`, so no two are the same token and a cache
//! keyed by the token can only hit on a repeat.
//!
//! No wasmtime here: the demo build (`--no-default-features`) has the subcommand too.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use rand::RngCore as _;
use serde_json::{json, Value};

use crate::mint::{now_unix, TestKey};

/// The bench provider's issuer.
pub const ISSUER: &str = "https://idp.bench.mlgate.test";
/// The bench provider's audience.
pub const AUDIENCE: &str = "api://ml-bench";

/// The claims of bench token `i`: an Entra-sized user token (≈ 700 bytes signed).
pub fn claims(i: u64, salt: u64, now: u64, ttl: u64) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": format!("bench-user-{}", i % 1000),
        "oid": format!("0b1e2c3d-4e5f-4a6b-8c7d-{:012x}", i % 1000),
        "tid": "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7",
        "name": "Bench User",
        "scp": "Models.Read Models.Invoke",
        "groups": ["ml-scientists", "llm-users"],
        "jti": format!("bench-{salt:016x}-{i}"),
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    })
}

/// `count` distinct valid tokens, signed on every core.
pub fn valid_tokens(count: usize, now: u64, ttl: u64) -> Vec<String> {
    let salt = rand::random::<u64>();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let key = TestKey::rsa_a();
    let mut out = vec![String::new(); count];
    let chunk = count.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (c, slice) in out.chunks_mut(chunk).enumerate() {
            let key = key.clone();
            s.spawn(move || {
                for (j, slot) in slice.iter_mut().enumerate() {
                    let i = (c * chunk + j) as u64;
                    *slot = key.sign(&claims(i, salt, now, ttl), Algorithm::RS256);
                }
            });
        }
    });
    out
}

/// A forgery of `token`: its header and payload with random signature bytes of the same length, so it is
/// well-formed and only the signature check can refuse it. The top bit is cleared so that, read as a number,
/// the signature is below any RSA modulus of that length (whose top bit is set): verifiers reject a signature
/// ≥ the modulus before any arithmetic, and an attacker would not send those cheap ones.
pub fn forge(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').unwrap_or((token, ""));
    let len = URL_SAFE_NO_PAD.decode(sig).map(|s| s.len()).unwrap_or(256);
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    if let Some(first) = bytes.first_mut() {
        *first &= 0x7f;
    }
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// `count` distinct forged tokens (distinct payloads too: a negative cache cannot help either). Cheap: only
/// one real signature is made, for the shape.
pub fn forged_tokens(count: usize, now: u64, ttl: u64) -> Vec<String> {
    let salt = rand::random::<u64>();
    let key = TestKey::rsa_a();
    (0..count as u64)
        .map(|i| {
            let header = json!({"alg": "RS256", "typ": "JWT", "kid": key.kid()});
            let h = URL_SAFE_NO_PAD.encode(header.to_string());
            let p = URL_SAFE_NO_PAD.encode(claims(i, salt, now, ttl).to_string());
            forge(&format!("{h}.{p}.{}", "A".repeat(342)))
        })
        .collect()
}

/// `count` distinct forgeries of ~1,700 distinct short claims in 16 KiB: 200 at the top level, the rest in
/// one nested object — the most names a token under mlgate's default `max_token_bytes` (and its 256 claims per
/// object) can bring to the duplicate-claim check before the signature is looked at.
pub fn wide_forged_tokens(count: usize, now: u64, ttl: u64) -> Vec<String> {
    let salt = rand::random::<u64>();
    let key = TestKey::rsa_a();
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT", "kid": key.kid()}).to_string());
    (0..count as u64)
        .map(|i| {
            let mut claims = claims(i, salt, now, ttl);
            for k in 0..200 {
                claims[format!("c{k}")] = json!(k % 10);
            }
            let mut nested = serde_json::Map::new();
            let mut k = 200;
            while claims.to_string().len() + Value::Object(nested.clone()).to_string().len()
                < 11_400
            {
                nested.insert(format!("c{k}"), json!(k % 10));
                k += 1;
            }
            claims["ext"] = Value::Object(nested);
            let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
            forge(&format!("{header}.{payload}.{}", "A".repeat(342)))
        })
        .collect()
}

const HELP: &str = "usage: mlgate-harness bench-tokens --out DIR [--count N] [--ttl SECONDS]

Writes the tokens `make bench` sends (one per line), for envoy/bench/mlgate-bench.json and the native
chains of envoy/bench/ (issuer https://idp.bench.mlgate.test, audience api://ml-bench, RS256, key rsa-a,
groups ml-scientists + llm-users):
  DIR/one.txt      one valid token (scenario a: the same token on every request; d: on a forbidden route)
  DIR/fresh.txt    N distinct valid tokens (scenario b: cold verification)
  DIR/forged.txt   N distinct tokens with random signatures (scenario c)
  DIR/forged-wide.txt  min(N, 2000) distinct forgeries of ~1,700 claims each (200 top-level, the rest nested), 16 KiB (scenario e)
options: --count N (default 20000), --ttl SECONDS (default 21600)
";

/// `mlgate-harness bench-tokens …`: see `HELP`.
pub fn cli(args: &[String]) -> anyhow::Result<ExitCode> {
    let mut out: Option<PathBuf> = None;
    let mut count: usize = 20_000;
    let mut ttl: u64 = 6 * 3600;
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
                return Ok(ExitCode::SUCCESS);
            }
            "--out" => out = Some(value("--out")?.into()),
            "--count" => count = value("--count")?.parse().context("--count")?,
            "--ttl" => ttl = value("--ttl")?.parse().context("--ttl")?,
            other => bail!("unknown option {other:?}\n{HELP}"),
        }
    }
    let out = out.ok_or_else(|| anyhow!("--out is required\n{HELP}"))?;
    if count == 0 {
        bail!("--count must be at least 1");
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let now = now_unix();
    let started = std::time::Instant::now();
    let fresh = valid_tokens(count, now, ttl);
    let one = valid_tokens(1, now, ttl);
    let forged = forged_tokens(count, now, ttl);
    let wide = wide_forged_tokens(count.min(2000), now, ttl);
    for (name, tokens) in [
        ("one.txt", &one),
        ("fresh.txt", &fresh),
        ("forged.txt", &forged),
        ("forged-wide.txt", &wide),
    ] {
        let path = out.join(name);
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?,
        );
        for t in tokens {
            writeln!(f, "{t}")?;
        }
        f.flush()?;
    }
    eprintln!(
        "bench-tokens: {count} fresh + {count} forged + 1 in {} ({:.1} s), valid for {ttl} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_forgeries_keep_the_shape() {
        let now = now_unix();
        let valid = valid_tokens(5, now, 60);
        let mut unique = valid.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 5);
        let forged = forged_tokens(3, now, 60);
        for f in &forged {
            let parts: Vec<&str> = f.split('.').collect();
            assert_eq!(parts.len(), 3);
            let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            assert_eq!(sig.len(), 256);
            assert!(sig[0] < 0x80, "below the modulus");
        }
        let f = forge(&valid[0]);
        assert_eq!(
            f.rsplit_once('.').unwrap().0,
            valid[0].rsplit_once('.').unwrap().0
        );
        assert_ne!(f, valid[0]);
        for wide in wide_forged_tokens(2, now, 60) {
            assert!(
                wide.len() <= 16_384 && wide.len() > 15_000,
                "{}",
                wide.len()
            );
        }
    }
}
