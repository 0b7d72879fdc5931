//! sse-load: a black-box load client for Server-Sent Events servers.
//! See benches/README.md for the flags and what each number means.

mod args;
mod churn;
mod coord;
mod hist;
mod http;
mod net;
mod owner;
mod procstat;
mod publish;
mod ramp;
mod rawwrite;
mod report;
mod seqtrack;
mod sse;
mod table;
mod worker;

use args::{Config, Mode, USAGE};

fn parse_or_exit(mode: Mode, rest: &[String]) -> Config {
    match Config::parse(mode, rest) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sse-load: {e}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first().map(String::as_str) else {
        eprint!("{USAGE}");
        std::process::exit(2);
    };
    let rest = &argv[1..];
    let code = match cmd {
        "run" => coord::run(&parse_or_exit(Mode::Run, rest), &argv),
        "idle" => coord::run(&parse_or_exit(Mode::Idle, rest), &argv),
        "raw-write" => rawwrite::run(&parse_or_exit(Mode::RawWrite, rest)),
        "churn" => churn::run(&parse_or_exit(Mode::Churn, rest)),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            0
        }
        "__worker" => {
            let first = rest.first().and_then(|v| v.parse().ok()).unwrap_or(0);
            let count = rest.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            let mode = match rest.get(2).map(String::as_str) {
                Some("idle") => Mode::Idle,
                _ => Mode::Run,
            };
            let cfg = parse_or_exit(mode, rest.get(3..).unwrap_or(&[]));
            match worker::run(&cfg, first, count) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("sse-load worker: {e}");
                    1
                }
            }
        }
        "table" => match table::run(rest) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("sse-load table: {e}");
                2
            }
        },
        "__raw-reader" => match rawwrite::reader(rest) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("sse-load raw-reader: {e}");
                1
            }
        },
        other => {
            eprintln!("sse-load: unknown mode {other:?}\n\n{USAGE}");
            2
        }
    };
    std::process::exit(code);
}
