//! What a run shows and draws: a progress bar on a terminal, throughput
//! sampled every 100 ms, and the `--plot` chart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Counts messages during a run: drives the progress bar (on a terminal)
/// and samples throughput every 100 ms for `--plot`.
#[derive(Debug, Clone)]
pub struct Progress {
    count: Arc<std::sync::atomic::AtomicU64>,
    samples: Arc<Mutex<Vec<(f64, f64)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Progress {
    pub fn start(total: u64, label: &'static str) -> Self {
        use std::io::IsTerminal;
        let p = Self { count: Arc::default(), samples: Arc::default(), stop: Arc::default() };
        let bar = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
            ) {
                bar.set_style(style);
            }
            bar.set_prefix(label);
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let q = p.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (mut last_count, mut last_at) = (0u64, 0f64);
            while !q.stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let n = q.count.load(std::sync::atomic::Ordering::Relaxed);
                let t = started.elapsed().as_secs_f64();
                bar.set_position(n);
                if let Ok(mut s) = q.samples.lock() {
                    s.push((t, (n - last_count) as f64 / (t - last_at).max(1e-9)));
                }
                (last_count, last_at) = (n, t);
            }
            bar.finish_and_clear();
        });
        p
    }

    pub fn add(&self, n: u64) {
        self.count.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn finish(&self) -> Vec<(f64, f64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Throughput over time above the latency by percentile, as one SVG.
pub fn plot(
    path: &std::path::Path,
    title: &str,
    throughput: &[(f64, f64)],
    latency: &Histogram<u64>,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(350);
    let max_t = throughput.iter().map(|s| s.0).fold(0.1, f64::max);
    let max_r = throughput.iter().map(|s| s.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{title}: throughput"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_t, 0.0..max_r)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("seconds").y_desc("msgs/s").draw().map_err(|e| err(&e))?;
    chart.draw_series(LineSeries::new(throughput.iter().copied(), &BLUE)).map_err(|e| err(&e))?;
    let quantiles: Vec<(f64, f64)> = (0..=1000)
        .map(|i| {
            let q = f64::from(i) / 1000.0 * 0.999;
            (q * 100.0, latency.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect();
    let max_l = quantiles.iter().map(|q| q.1).fold(0.1, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("latency by percentile (to p99.9)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..100.0, 0.0..max_l)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("percentile").y_desc("ms").draw().map_err(|e| err(&e))?;
    chart.draw_series(LineSeries::new(quantiles, &RED)).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
