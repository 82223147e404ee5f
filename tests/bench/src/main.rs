//! Benchmark harness. Prints a table of rows/s, MB/s and peak memory for cartridge-warp
//! next to the raw limits measured in the same run on the same rows.
//!
//! `warp-bench sink [--rows N] [--runs N]`: the PostgreSQL sink alone.
//! `warp-bench mysql [--rows N] [--runs N] [--changes N] [--load N] [--load-secs N]`:
//! MariaDB → PostgreSQL through the `cartridge-warp` binary next to this one.
//! `warp-bench mongo [--docs N] [--changes N] [--runs N]`: MongoDB (the emulator) through
//! the binary, next to raw driver reads of the same server.
//! `warp-bench verify [--rows N] [--changes N] [--runs N]`: background verification's
//! memory, pass rate and effect on a catch-up (5 million rows by default).
//! `warp-bench page [--tables N] [--requests N]`: the status page's answer times with N
//! tables in the metadata schema.
//! `--json heavy` gives every row 1–4 JSON line items (light JSON by default).
//! Peers from `WARP_TEST_*_URL` (scripts/bench.sh sets them).

mod cpu;
mod data;
mod fanout;
mod merge;
mod mongo;
mod mysql;
mod page;
mod replicator;
mod scale;
mod sink;
mod verify;

use std::time::Duration;

/// The allocator `cartridge-warp` ships with, so the sink measured in this process
/// behaves as it does in the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One measured line of the report.
pub struct Measurement {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
    pub took: Duration,
}

impl Measurement {
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.took.as_secs_f64()
    }
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.took.as_secs_f64()
    }
}

/// Peak resident memory of this process so far (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Files one run's lines: `per_line[i]` gathers line `i` of every run.
fn add_run(per_line: &mut Vec<Vec<Measurement>>, lines: Vec<Measurement>) {
    for (i, m) in lines.into_iter().enumerate() {
        if per_line.len() <= i {
            per_line.push(Vec::new());
        }
        per_line[i].push(m);
    }
}

fn median(mut runs: Vec<Measurement>) -> Measurement {
    runs.sort_by_key(|m| m.took);
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

/// The `cartridge-warp` binary built next to this one.
fn warp_binary() -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let binary = std::env::current_exe()?
        .parent()
        .ok_or("no directory")?
        .join("cartridge-warp");
    if !binary.is_file() {
        return Err(format!("{} is missing: build warp-cli first", binary.display()).into());
    }
    Ok(binary)
}

pub fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows = arg(&args, "--rows", 1_000_000);
    let runs = arg(&args, "--runs", 3).max(1);
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1));
    data::use_heavy_json(json.is_some_and(|j| j == "heavy"));
    let url = std::env::var("WARP_TEST_PG_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into());
    match args.first().map(String::as_str) {
        Some("sink") | None => {
            let mut per_line: Vec<Vec<Measurement>> = Vec::new();
            for run in 1..=runs {
                eprintln!("run {run}/{runs}: {rows} rows");
                add_run(&mut per_line, sink::run(&url, rows).await?);
            }
            let lines: Vec<Measurement> = per_line.into_iter().map(median).collect();
            print_copy_table(&lines, runs);
        }
        Some("mysql") => {
            let my_url = std::env::var("WARP_TEST_MARIADB_URL")
                .map_err(|_| "WARP_TEST_MARIADB_URL is not set (scripts/bench.sh sets it)")?;
            let binary = warp_binary()?;
            let settings = mysql::Settings {
                pg_url: &url,
                my_url: &my_url,
                binary: &binary,
                rows,
                changes: arg(&args, "--changes", 300_000),
                load_per_sec: arg(&args, "--load", 10_000),
                load_secs: arg(&args, "--load-secs", 20),
            };
            let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(&my_url)?);
            eprintln!("generating {rows} source rows");
            mysql::seed(&pool, i64::try_from(rows)?).await?;
            let tunings = [mysql::Tuning::Defaults, mysql::Tuning::Tuned];
            let mut per_line: Vec<Vec<Measurement>> = Vec::new();
            let mut rss = [Vec::new(), Vec::new()];
            let (mut p50, mut p99) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
            let (mut snapshot_cpu, mut catch_up_cpu) =
                ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
            for run in 1..=runs {
                let mut lines = Vec::new();
                for (i, tuning) in tunings.into_iter().enumerate() {
                    eprintln!("run {run}/{runs}, {tuning:?}");
                    // The limits once per pass, in the same pass as both settings.
                    let r = mysql::run(&settings, tuning, i == 0).await?;
                    lines.extend(r.lines);
                    rss[i].push(r.warp_rss_mib);
                    p50[i].push(r.lag_p50);
                    p99[i].push(r.lag_p99);
                    snapshot_cpu[i].push(r.snapshot_cpu);
                    catch_up_cpu[i].push(r.catch_up_cpu);
                }
                add_run(&mut per_line, lines);
            }
            let lines: Vec<Measurement> = per_line.into_iter().map(median).collect();
            // Snapshots against the raw COPYs (text; binary in the last column), catch-ups
            // against PostgreSQL's own apply of the same statements (line 4); the image
            // merges (lines 5, 6) too, so their ratio says how much of it is reachable.
            let limit_of: Vec<usize> = lines
                .iter()
                .map(|l| {
                    if l.name.contains("catch-up") || l.name.contains("merging") {
                        3
                    } else {
                        0
                    }
                })
                .collect();
            print_table(
                &lines,
                runs,
                &limit_of,
                "vs its limit",
                Some((1, "vs raw COPY (binary)")),
            );
            // Against the faster of the two image merges.
            let floor = lines
                .iter()
                .filter(|l| l.name.contains("merging"))
                .max_by(|a, b| a.rows_per_sec().total_cmp(&b.rows_per_sec()));
            if let Some(floor) = floor {
                println!();
                for l in lines.iter().filter(|l| l.name.contains("catch-up")) {
                    println!(
                        "{}: {:.2}× of the faster image merge",
                        l.name,
                        l.rows_per_sec() / floor.rows_per_sec()
                    );
                }
            }
            for (i, tuning) in tunings.into_iter().enumerate() {
                println!("\n{tuning:?}:");
                println!(
                    "peak RSS of cartridge-warp: {:.0} MiB (median of the runs' peaks)",
                    median_f64(std::mem::take(&mut rss[i]))
                );
                println!(
                    "lag at {} changes/s offered for {} s: p50 {:.3} s, p99 {:.3} s (medians)",
                    settings.load_per_sec,
                    settings.load_secs,
                    median_f64(std::mem::take(&mut p50[i])),
                    median_f64(std::mem::take(&mut p99[i]))
                );
                println!(
                    "{}",
                    cpu::CpuUse::median(std::mem::take(&mut snapshot_cpu[i])).line("snapshot")
                );
                println!(
                    "{}",
                    cpu::CpuUse::median(std::mem::take(&mut catch_up_cpu[i])).line("catch-up")
                );
            }
        }
        Some("mongo") => {
            let mongo_url = std::env::var("WARP_TEST_MONGO_URL")
                .map_err(|_| "WARP_TEST_MONGO_URL is not set (scripts/bench.sh sets it)")?;
            let binary = warp_binary()?;
            let settings = mongo::Settings {
                pg_url: &url,
                mongo_url: &mongo_url,
                binary: &binary,
                docs: arg(&args, "--docs", 100_000),
                changes: arg(&args, "--changes", 20_000),
            };
            let mut per_line: Vec<Vec<Measurement>> = Vec::new();
            let mut rss = Vec::new();
            for run in 1..=runs {
                eprintln!("run {run}/{runs}");
                let (lines, peak) = mongo::run(&settings).await?;
                add_run(&mut per_line, lines);
                rss.push(peak);
            }
            let lines: Vec<Measurement> = per_line.into_iter().map(median).collect();
            print_table(&lines, runs, &[0, 0, 2, 2], "vs raw driver read", None);
            println!(
                "peak RSS of cartridge-warp: {:.0} MiB (median of the runs' peaks)",
                median_f64(rss)
            );
        }
        Some("fanout") => {
            let my_url = std::env::var("WARP_TEST_MARIADB_URL")
                .map_err(|_| "WARP_TEST_MARIADB_URL is not set (scripts/bench.sh sets it)")?;
            let binary = warp_binary()?;
            let settings = fanout::Settings {
                pg_url: &url,
                my_url: &my_url,
                binary: &binary,
                changes: arg(&args, "--changes", 100_000),
            };
            let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(&my_url)?);
            eprintln!("creating the hot table and {} idle ones", 50);
            fanout::seed(&pool).await?;
            let (mut alone, mut beside) = (Vec::new(), Vec::new());
            for run in 1..=runs {
                eprintln!("run {run}/{runs}");
                alone.push(fanout::catch_up(&settings, false).await?);
                beside.push(fanout::catch_up(&settings, true).await?);
            }
            print_fanout(&alone, &beside, settings.changes, runs);
        }
        Some("scale") => {
            let my_url = std::env::var("WARP_TEST_MARIADB_URL")
                .map_err(|_| "WARP_TEST_MARIADB_URL is not set (scripts/bench.sh sets it)")?;
            let binary = warp_binary()?;
            let settings = scale::Settings {
                pg_url: &url,
                my_url: &my_url,
                binary: &binary,
                rows: arg(&args, "--rows", 5_000_000),
                load_per_sec: arg(&args, "--load", 2_000),
            };
            let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(&my_url)?);
            eprintln!("generating {} source rows", settings.rows);
            mysql::seed(&pool, i64::try_from(settings.rows)?).await?;
            let mut figures = Vec::new();
            // `--replicas N`: only that count (default: 1, 2 and 3 in turn).
            let only = usize::try_from(arg(&args, "--replicas", 0))?;
            // Without `--replicas`: first one replica copying before it streams (the
            // default), the baseline for lag during a copy.
            let counts: Vec<usize> = if only > 0 { vec![only] } else { vec![1, 2, 3] };
            if only == 0 {
                eprintln!("copy by 1 replica before streaming");
                figures.push(scale::run(&settings, 1, false).await?);
            }
            for replicas in counts {
                eprintln!("copy by {replicas} replica(s) inside the stream");
                figures.push(scale::run(&settings, replicas, true).await?);
            }
            print_scale(&figures, &settings);
        }
        Some("verify") => {
            let my_url = std::env::var("WARP_TEST_MARIADB_URL")
                .map_err(|_| "WARP_TEST_MARIADB_URL is not set (scripts/bench.sh sets it)")?;
            let binary = warp_binary()?;
            let settings = verify::Settings {
                pg_url: &url,
                my_url: &my_url,
                binary: &binary,
                rows: arg(&args, "--rows", 5_000_000),
                changes: arg(&args, "--changes", 300_000),
            };
            let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(&my_url)?);
            eprintln!("generating {} source rows", settings.rows);
            mysql::seed(&pool, i64::try_from(settings.rows)?).await?;
            let mut figures = Vec::new();
            for run in 1..=runs {
                eprintln!("run {run}/{runs}");
                figures.push(verify::run(&settings, run).await?);
            }
            verify::print(&figures, &settings);
        }
        Some("page") => {
            let my_url = std::env::var("WARP_TEST_MARIADB_URL")
                .map_err(|_| "WARP_TEST_MARIADB_URL is not set (scripts/bench.sh sets it)")?;
            let binary = warp_binary()?;
            page::run(&page::Settings {
                pg_url: &url,
                my_url: &my_url,
                binary: &binary,
                tables: arg(&args, "--tables", 500),
                requests: arg(&args, "--requests", 200),
            })
            .await?;
        }
        Some(other) => {
            return Err(format!(
                "unknown benchmark `{other}` (known: sink, mysql, mongo, fanout, page, verify)"
            )
            .into())
        }
    }
    Ok(())
}

/// The fan-out table: each case's medians, and the 51-table case against the 1-table one.
fn print_scale(figures: &[scale::Figures], s: &scale::Settings<'_>) {
    println!(
        "copy of {} rows while a writer changes the table at {}/s",
        s.rows, s.load_per_sec
    );
    println!("| replicas, copy | seconds | rows/s | busy CPU-s per replica | sum | PostgreSQL CPU-s | MariaDB CPU-s | lag p50 / p99 / max (s) over probes |");
    println!("|---:|---:|---:|---|---:|---:|---:|---|");
    for f in figures {
        let busy: Vec<String> = f.busy.iter().map(|b| format!("{b:.1}")).collect();
        let how = if f.in_stream {
            "inside the stream"
        } else {
            "before streaming"
        };
        println!(
            "| {}, {how} | {:.1} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.2} / {:.2} / {:.2} ({}) |",
            f.replicas,
            f.took.as_secs_f64(),
            s.rows as f64 / f.took.as_secs_f64(),
            busy.join(" + "),
            f.busy.iter().sum::<f64>(),
            f.postgres,
            f.mariadb,
            f.lag.0,
            f.lag.1,
            f.lag.2,
            f.probes
        );
    }
}

fn print_fanout(alone: &[fanout::CatchUp], beside: &[fanout::CatchUp], changes: u64, runs: u64) {
    let med = |runs: &[fanout::CatchUp], f: fn(&fanout::CatchUp) -> f64| {
        median_f64(runs.iter().map(f).collect())
    };
    println!(
        "catch-up of {changes} changes to one hot table, default settings (medians of {runs})"
    );
    println!(
        "| tables replicated | seconds | cartridge-warp CPU-s | MariaDB CPU-s | PostgreSQL CPU-s |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut figures = Vec::new();
    for (name, runs) in [("1 (hot only)", alone), ("51 (hot + 50 idle)", beside)] {
        let f = (
            med(runs, |c| c.seconds),
            med(runs, |c| c.cpu.warp),
            med(runs, |c| c.cpu.mariadb),
            med(runs, |c| c.cpu.postgres),
        );
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
            f.0, f.1, f.2, f.3
        );
        figures.push(f);
    }
    let (one, many) = (figures[0], figures[1]);
    println!(
        "51 tables vs 1: wall {:.2}×, cartridge-warp + MariaDB CPU {:.2}× (goal ≤ 1.20×), cartridge-warp {:.2}×, MariaDB {:.2}×",
        many.0 / one.0,
        (many.1 + many.2) / (one.1 + one.2).max(f64::MIN_POSITIVE),
        many.1 / one.1.max(f64::MIN_POSITIVE),
        many.2 / one.2.max(f64::MIN_POSITIVE)
    );
}

/// Lines 0 and 1 are the raw text and binary COPY limits; every line against both.
fn print_copy_table(lines: &[Measurement], runs: u64) {
    let binary = Some((1, "vs raw COPY (binary)"));
    print_table(lines, runs, &[], "vs raw COPY (text)", binary);
}

/// One row per line; `limit_of[i]` is the line that line `i` is compared with
/// (the first line when absent). With `also`, a second ratio column against that line.
fn print_table(
    lines: &[Measurement],
    runs: u64,
    limit_of: &[usize],
    versus: &str,
    also: Option<(usize, &str)>,
) {
    let extra = also.map_or(String::new(), |(_, name)| format!(" {name} |"));
    println!("| measure (median of {runs}) | rows | seconds | rows/s | MB/s | {versus} |{extra}");
    println!(
        "|---|---:|---:|---:|---:|---:|{}",
        if also.is_some() { "---:|" } else { "" }
    );
    for (i, m) in lines.iter().enumerate() {
        let limit = lines[limit_of.get(i).copied().unwrap_or(0)].rows_per_sec();
        let second = also.map_or(String::new(), |(j, _)| {
            format!(" {:.2}× |", m.rows_per_sec() / lines[j].rows_per_sec())
        });
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.1} | {:.2}× |{second}",
            m.name,
            m.rows,
            m.took.as_secs_f64(),
            m.rows_per_sec(),
            m.mb_per_sec(),
            m.rows_per_sec() / limit
        );
    }
    println!(
        "\npeak RSS of the harness process: {:.0} MiB",
        peak_rss_mib()
    );
}
