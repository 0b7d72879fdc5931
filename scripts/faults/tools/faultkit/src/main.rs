//! faultkit: the client side of scripts/faults. One binary, one subcommand
//! per role; each prints one JSON object on stdout when it is done.

mod busy;
mod channels;
mod check;
mod churn;
mod common;
mod half;
mod hold;
mod probe;
mod publish;
mod slowloris;
mod sse;
mod sub;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        eprintln!("usage: faultkit pub|sub|churn|check|slowloris|probe|peek|hold|half|busy|channels --addr HOST:PORT [options]");
        std::process::exit(2);
    };
    common::install_stop_handler();
    let args = common::Args::parse(&argv[1..]);
    match cmd.as_str() {
        "pub" => publish::run(&args),
        "sub" => sub::run(&args),
        "churn" => churn::run(&args),
        "check" => check::run(&args),
        "slowloris" => slowloris::run(&args),
        "probe" => probe::run(&args),
        "peek" => probe::peek(&args),
        "hold" => hold::run(&args),
        "half" => half::run(&args),
        "busy" => busy::run(&args),
        "channels" => channels::run(&args),
        other => common::die(&format!("unknown subcommand {other}")),
    }
}
