//! `kappa bench fsync`: the disk's own fsync latency at a steady write rate, without Kappa.
//! Each of `files` writers overwrites its file in place (as a broker writes reused segment
//! files), `chunk` bytes at a time followed by `fdatasync`, all together at `rate_mb` MB/s.
//! It is to acks=all latency what `dd` is to throughput: while the device takes long over a
//! flush, every acks=all record waiting for it waits too, whatever the broker does.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

#[derive(clap::Args)]
pub struct FsyncBenchArgs {
    /// Directory to write in: one on the file system of the broker's data directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Total write rate, MB/s.
    #[arg(long, default_value_t = 250)]
    rate_mb: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Files written at once, one writer each (as partitions).
    #[arg(long, default_value_t = 6)]
    files: usize,
    /// Bytes each writer writes before each fsync.
    #[arg(long, default_value_t = 256 * 1024)]
    chunk: usize,
}

/// Fsyncs slower than this count as stalls.
const SLOW: Duration = Duration::from_millis(10);

pub fn run(args: FsyncBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.files > 0 && args.chunk > 0 && args.rate_mb > 0 && args.seconds > 0,
        "files, chunk, rate and seconds must be positive"
    );
    let per_file_rate = (args.rate_mb << 20) as f64 / args.files as f64;
    let per_file_bytes = (per_file_rate * args.seconds as f64) as u64;
    let chunks = per_file_bytes.div_ceil(args.chunk as u64).max(1);
    let paths: Vec<PathBuf> = (0..args.files)
        .map(|i| {
            args.dir
                .join(format!(".kappa-fsync-bench-{}-{i}", std::process::id()))
        })
        .collect();
    let result = (|| {
        // Written and synced first, so that the measured writes overwrite blocks in place.
        let block = vec![0x5au8; args.chunk];
        let mut files = Vec::new();
        for path in &paths {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            for i in 0..chunks {
                file.write_all_at(&block, i * args.chunk as u64)?;
            }
            file.sync_all()?;
            files.push(file);
        }
        let start = Instant::now();
        let writers: Vec<_> = files
            .into_iter()
            .map(|file| {
                let chunk = args.chunk;
                std::thread::spawn(move || write_paced(&file, chunk, chunks, per_file_rate, start))
            })
            .collect();
        let mut latencies = Vec::new();
        for writer in writers {
            latencies.extend(writer.join().expect("writer thread")?);
        }
        let elapsed = start.elapsed();
        print_report(&args, &mut latencies, elapsed);
        Ok(())
    })();
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Writes `chunks` chunks at `rate` bytes/s from `start`, each followed by an fsync; returns
/// the fsync durations.
fn write_paced(
    file: &File,
    chunk: usize,
    chunks: u64,
    rate: f64,
    start: Instant,
) -> std::io::Result<Vec<Duration>> {
    let data = vec![0xa5u8; chunk];
    let mut latencies = Vec::with_capacity(chunks as usize);
    for i in 0..chunks {
        let due = start + Duration::from_secs_f64((i * chunk as u64) as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        file.write_all_at(&data, i * chunk as u64)?;
        let synced = Instant::now();
        file.sync_data()?;
        latencies.push(synced.elapsed());
    }
    Ok(latencies)
}

fn print_report(args: &FsyncBenchArgs, latencies: &mut [Duration], elapsed: Duration) {
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(latencies[((latencies.len() - 1) as f64 * q) as usize]);
    let slow: Vec<&Duration> = latencies.iter().filter(|d| **d > SLOW).collect();
    let stalled: Duration = slow.iter().copied().sum();
    // Share of each writer's time spent waiting in a slow fsync: records arriving then wait.
    let stalled_share = stalled.as_secs_f64() / (elapsed.as_secs_f64() * args.files as f64);
    println!(
        "fsync: {} files, {} KiB per fsync, {} MB/s for {:.1} s: {} fsyncs, latency ms p50 {:.2} p99 {:.2} p999 {:.2} max {:.2}; over {} ms: {} ({:.1} % of the writers' time), over 100 ms: {}",
        args.files,
        args.chunk / 1024,
        args.rate_mb,
        elapsed.as_secs_f64(),
        latencies.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        latencies.last().map_or(0.0, |d| ms(*d)),
        SLOW.as_millis(),
        slow.len(),
        stalled_share * 100.0,
        slow.iter().filter(|d| d.as_millis() > 100).count(),
    );
}
