//! `mlgate-harness <subcommand>`: check, check-config, explain, bench, bench-tokens, token, idp, backend.
use std::process::ExitCode;

const USAGE: &str = "usage: mlgate-harness <command> [options]

commands:
  check   --config FILE --cases FILE   run a table of policy cases through the real mlgate.wasm
  check-config FILE...                 load each policy into the real mlgate.wasm: ok, or the field it refuses
  explain --config FILE (--token JWT | --claims JSON) --method M --path P [--header K:V]... [--body FILE] [--json]
                                       why the real mlgate.wasm decides what it decides for one request
  bench   [--scenario S] [--iterations N]  µs per request inside wasmtime per scenario (see `bench --help`)
  bench-tokens --out DIR [--count N]   the tokens `make bench` sends (valid, forged)
  token   --key FILE --claims JSON     mint a signed token (see `token --help`)
  idp     [--port N]                   demo identity provider on 127.0.0.1 (OIDC discovery, JWKS, personas)
  backend [--port N]                   demo ML backend on 127.0.0.1 (Azure ML, KServe v2, OpenAI-compatible)
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest: Vec<String> = args.collect();
    let result = match command.as_str() {
        "token" => mlgate_harness::mint::cli(&rest),
        "idp" => mlgate_harness::idp::cli(&rest),
        "backend" => mlgate_harness::backend::cli(&rest),
        "bench-tokens" => mlgate_harness::bench_tokens::cli(&rest),
        #[cfg(feature = "wasm-host")]
        "bench" => mlgate_harness::bench::cli(&rest),
        #[cfg(feature = "wasm-host")]
        "check" => mlgate_harness::check::cli(&rest),
        #[cfg(feature = "wasm-host")]
        "check-config" => mlgate_harness::check::check_config_cli(&rest),
        #[cfg(feature = "wasm-host")]
        "explain" => mlgate_harness::explain::cli(&rest),
        #[cfg(not(feature = "wasm-host"))]
        "check" | "check-config" | "bench" | "explain" => Err(anyhow::anyhow!(
            "this build has no wasm host: build with `make harness` (cargo build --release -p mlgate-harness)"
        )),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprintln!("unknown command {other:?}\n{USAGE}");
            Ok(ExitCode::from(2))
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mlgate-harness {command}: {err:#}");
            ExitCode::from(2)
        }
    }
}
