//! `scripts/chaos`: runs [`rejectwatch_tests::chaos`] and prints its report as one JSON
//! line; exits 1 unless no record was lost or doubled and every expected alert came
//! exactly once.
//!
//! Usage: chaos [--seed N] [--records N] [--fault-rate R] [--kills N] [--windows N]
//!              [--settle-minutes N] [--cooldown-minutes N]

use rejectwatch_tests::chaos::{MUST_BE_ZERO, Options, run};

fn parse() -> Result<Options, String> {
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |error: &dyn std::fmt::Display| format!("{flag} {value}: {error}");
        match flag.as_str() {
            "--seed" => options.seed = value.parse().map_err(|e| bad(&e))?,
            "--records" => options.records = value.parse().map_err(|e| bad(&e))?,
            "--fault-rate" => options.fault_rate = value.parse().map_err(|e| bad(&e))?,
            "--kills" => options.kills = value.parse().map_err(|e| bad(&e))?,
            "--windows" => options.windows = value.parse().map_err(|e| bad(&e))?,
            "--settle-minutes" => options.settle_minutes = value.parse().map_err(|e| bad(&e))?,
            "--cooldown-minutes" => {
                options.cooldown_minutes = value.parse().map_err(|e| bad(&e))?;
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if !(0.0..=1.0).contains(&options.fault_rate) || options.windows == 0 {
        return Err("--fault-rate is 0 to 1, --windows at least 1".into());
    }
    Ok(options)
}

fn main() {
    let options = match parse() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("chaos: {error}");
            eprintln!(
                "usage: chaos [--seed N] [--records N] [--fault-rate R] [--kills N] [--windows N] \
                 [--settle-minutes N] [--cooldown-minutes N]"
            );
            std::process::exit(2);
        }
    };
    let report = run(&options);
    println!("{report}");
    if MUST_BE_ZERO.iter().any(|name| report[name] != 0) {
        std::process::exit(1);
    }
}
