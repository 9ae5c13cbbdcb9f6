//! `--memory-plot`: the process's resident memory over a run against the bytes it landed,
//! drawn as an SVG chart, with the peak and the memory budget marked.
//!
//! The [`Sampler`] reads the resident set size and the run's [`Progress`] every
//! [`SAMPLE_EVERY`] into [`Samples`] (bounded: [`MAX_SAMPLES`]); [`draw`] turns samples into
//! the chart. The two are apart so that the drawing can be tested on samples made up for it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use landline::RunReport;
use landline::report::{Progress, current_rss_bytes};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often the sampler reads memory and the counters.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Samples kept at most (32 bytes each): 200 s of a run at full resolution, then every other
/// one, and so on; far more points than the chart is wide either way.
const MAX_SAMPLES: usize = 2_000;

const MIB: f64 = 1024.0 * 1024.0;

/// One reading: the time into the run and what the process holds and has done by then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Seconds since the sampler started.
    pub(crate) seconds: f64,
    /// Resident set size.
    pub(crate) rss_bytes: u64,
    /// Compressed bytes handed to the store.
    pub(crate) written_bytes: u64,
    /// Bytes of JSON Lines produced.
    pub(crate) lines_bytes: u64,
}

/// Evenly spaced samples, at most `cap`: when full, every other one goes and only every
/// other one is taken from then on, so the spacing doubles and memory stays bounded.
#[derive(Debug)]
pub(crate) struct Samples {
    kept: Vec<Sample>,
    cap: usize,
    /// Only every `stride`-th sample offered is kept.
    stride: u64,
    offered: u64,
}

impl Samples {
    /// No samples yet; `cap` is rounded up to an even number of at least 2.
    fn new(cap: usize) -> Self {
        let cap = cap.max(2).next_multiple_of(2);
        Samples {
            kept: Vec::with_capacity(cap),
            cap,
            stride: 1,
            offered: 0,
        }
    }

    /// Offers the next sample of the regular series.
    fn push(&mut self, sample: Sample) {
        let n = self.offered;
        self.offered += 1;
        if !n.is_multiple_of(self.stride) {
            return;
        }
        if self.kept.len() >= self.cap {
            self.halve();
            // `cap` is even: the sample that found the series full falls on the new stride.
            if !n.is_multiple_of(self.stride) {
                return;
            }
        }
        self.kept.push(sample);
    }

    /// Adds the last sample, whatever the stride (the end of the run belongs on the chart).
    fn finish(&mut self, sample: Sample) {
        if self.kept.len() >= self.cap {
            self.halve();
        }
        self.kept.push(sample);
    }

    fn halve(&mut self) {
        let mut index = 0;
        self.kept.retain(|_| {
            index += 1;
            index % 2 == 1
        });
        self.stride *= 2;
    }

    /// The samples kept, oldest first.
    pub(crate) fn as_slice(&self) -> &[Sample] {
        &self.kept
    }
}

/// Reads memory and the counters every [`SAMPLE_EVERY`] until [`stop`](Self::stop)ped.
#[derive(Debug)]
pub(crate) struct Sampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Samples>,
}

impl Sampler {
    /// Starts sampling now, on a task of the current runtime.
    pub(crate) fn start(progress: Arc<Progress>) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut samples = Samples::new(MAX_SAMPLES);
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        if let Some(sample) = read(&progress, started) {
                            samples.push(sample);
                        }
                    }
                }
            }
            if let Some(sample) = read(&progress, started) {
                samples.finish(sample);
            }
            samples
        });
        Sampler { stop, task }
    }

    /// Takes a last sample and returns them all.
    pub(crate) async fn stop(self) -> Samples {
        let _ = self.stop.send(());
        // The task only reads counters: it ends unless the runtime is going away.
        self.task
            .await
            .unwrap_or_else(|_| Samples::new(MAX_SAMPLES))
    }
}

/// A sample now; `None` where the resident set size cannot be read.
fn read(progress: &Progress, started: Instant) -> Option<Sample> {
    Some(Sample {
        seconds: started.elapsed().as_secs_f64(),
        rss_bytes: current_rss_bytes()?,
        written_bytes: progress.bytes_written.load(Relaxed),
        lines_bytes: progress.bytes_uncompressed.load(Relaxed),
    })
}

/// What the chart marks besides the series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Marks {
    /// The process's peak resident set size (`None`: the samples' highest).
    pub(crate) peak_bytes: Option<u64>,
    /// What the run's settings allow it to hold at most.
    pub(crate) budget_bytes: u64,
    /// The chart's title.
    pub(crate) title: String,
}

impl Marks {
    /// The marks of `report`'s run.
    pub(crate) fn of(report: &RunReport) -> Self {
        Marks {
            peak_bytes: report.peak_rss_bytes,
            budget_bytes: report.memory.budget_bytes,
            title: format!(
                "{} records, {:.0} MiB of JSON Lines landed as {:.1} MiB of {} in {:.1} s",
                report.records,
                report.bytes_uncompressed as f64 / MIB,
                report.bytes_written as f64 / MIB,
                match report.compression {
                    landline::compress::Compression::None => "JSON Lines",
                    c => c.name(),
                },
                report.wall_seconds
            ),
        }
    }
}

const MEMORY: RGBColor = RGBColor(200, 40, 40);
const LANDED: RGBColor = RGBColor(30, 90, 200);
const BUDGET: RGBColor = RGBColor(90, 90, 90);

/// Draws `samples` into an SVG file at `path`: resident memory (left axis, MiB) and bytes
/// landed (right axis, MiB: compressed bytes handed to the store) over time, with the peak and the budget as
/// labelled horizontal lines on the memory axis.
pub(crate) fn draw(path: &Path, samples: &[Sample], marks: &Marks) -> anyhow::Result<()> {
    let Some(last) = samples.last() else {
        anyhow::bail!(
            "no memory samples to draw (resident memory cannot be read on this platform)"
        );
    };
    let failed = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    let mib = |bytes: u64| bytes as f64 / MIB;
    let sampled_peak = samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
    let peak = mib(marks.peak_bytes.unwrap_or(sampled_peak).max(sampled_peak));
    let budget = mib(marks.budget_bytes);
    let seconds = last.seconds.max(0.1);
    let memory_top = (peak.max(budget) * 1.15).max(1.0);
    let landed_top = (mib(last.written_bytes) * 1.05).max(1.0);

    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&marks.title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .right_y_label_area_size(72)
        .build_cartesian_2d(0f64..seconds, 0f64..memory_top)
        .map_err(|e| failed(&e))?
        .set_secondary_coord(0f64..seconds, 0f64..landed_top);
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("resident memory (MiB)")
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .draw()
        .map_err(|e| failed(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("landed, gzip (MiB)")
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| failed(&e))?;

    let legend = |color: RGBColor| {
        move |(x, y): (i32, i32)| PathElement::new([(x, y), (x + 24, y)], color.stroke_width(3))
    };
    chart
        .draw_secondary_series(LineSeries::new(
            samples.iter().map(|s| (s.seconds, mib(s.written_bytes))),
            LANDED.stroke_width(3),
        ))
        .map_err(|e| failed(&e))?
        .label("bytes landed (right axis)")
        .legend(legend(LANDED));
    let end = format!(
        "{:.1} MiB landed, from {:.0} MiB of JSON Lines",
        mib(last.written_bytes),
        mib(last.lines_bytes)
    );
    chart
        .draw_secondary_series(std::iter::once(Text::new(
            end,
            (seconds * 0.99, mib(last.written_bytes)),
            ("sans-serif", 14)
                .into_font()
                .color(&LANDED)
                .pos(Pos::new(HPos::Right, VPos::Bottom)),
        )))
        .map_err(|e| failed(&e))?;
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.seconds, mib(s.rss_bytes))),
            MEMORY.stroke_width(3),
        ))
        .map_err(|e| failed(&e))?
        .label("resident memory (left axis)")
        .legend(legend(MEMORY));

    let level = |y: f64, color: RGBColor, text: String| {
        let line = DashedLineSeries::new([(0.0, y), (seconds, y)], 10, 6, color.stroke_width(1));
        let label = Text::new(
            text,
            (seconds * 0.01, y),
            ("sans-serif", 14)
                .into_font()
                .color(&color)
                .pos(Pos::new(HPos::Left, VPos::Bottom)),
        );
        (line, label)
    };
    let (line, label) = level(peak, MEMORY, format!("peak {peak:.1} MiB"));
    chart.draw_series(line).map_err(|e| failed(&e))?;
    chart
        .draw_series(std::iter::once(label))
        .map_err(|e| failed(&e))?;
    let (line, label) = level(
        budget,
        BUDGET,
        format!("budget {budget:.1} MiB (what the settings allow at most)"),
    );
    chart.draw_series(line).map_err(|e| failed(&e))?;
    chart
        .draw_series(std::iter::once(label))
        .map_err(|e| failed(&e))?;

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| failed(&e))?;
    root.present().map_err(|e| failed(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u64) -> Sample {
        Sample {
            seconds: i as f64 * 0.1,
            rss_bytes: (20 << 20) + (i % 7) * 100_000,
            written_bytes: i * 300_000,
            lines_bytes: i * 3_000_000,
        }
    }

    #[test]
    fn samples_stay_bounded_and_evenly_spaced() {
        let mut samples = Samples::new(8);
        for i in 0..100 {
            samples.push(sample(i));
        }
        let kept = samples.as_slice();
        assert!(kept.len() <= 8, "{}", kept.len());
        assert_eq!(kept[0], sample(0));
        let gaps: Vec<f64> = kept
            .windows(2)
            .map(|w| w[1].seconds - w[0].seconds)
            .collect();
        assert!(
            gaps.iter().all(|g| (g - gaps[0]).abs() < 1e-9),
            "uneven: {gaps:?}"
        );
        // 100 offered into 8: the stride is 16, so samples 0, 16, ..., 96.
        assert_eq!(kept.last(), Some(&sample(96)));
        samples.finish(sample(100));
        assert_eq!(samples.as_slice().last(), Some(&sample(100)));
        assert!(samples.as_slice().len() <= 8);
    }

    #[test]
    fn draws_the_series_the_peak_and_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.svg");
        let samples: Vec<Sample> = (0..300).map(sample).collect();
        let marks = Marks {
            peak_bytes: Some(21 << 20),
            budget_bytes: 60 << 20,
            title: "1234 records".into(),
        };
        draw(&path, &samples, &marks).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        // Two series with many points each (the legend's samples are two-point lines).
        let long = svg
            .split("<polyline")
            .skip(1)
            .filter(|p| {
                p.split(" points=\"")
                    .nth(1)
                    .is_some_and(|pts| pts.split(' ').count() > 100)
            })
            .count();
        assert_eq!(long, 2, "{svg}");
        for text in [
            "1234 records",
            "resident memory (left axis)",
            "bytes landed (right axis)",
            "landed, gzip (MiB)",
            "85.5 MiB landed, from 855 MiB of JSON Lines",
            "peak 21.0 MiB",
            "budget 60.0 MiB",
        ] {
            assert!(svg.contains(text), "no {text:?} in the SVG");
        }
    }

    #[test]
    fn no_samples_is_an_error_and_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.svg");
        let marks = Marks {
            peak_bytes: None,
            budget_bytes: 1,
            title: String::new(),
        };
        let err = draw(&path, &[], &marks).unwrap_err();
        assert!(err.to_string().contains("no memory samples"), "{err}");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn the_sampler_reads_memory_and_the_counters() {
        let progress = Arc::new(Progress::default());
        let sampler = Sampler::start(Arc::clone(&progress));
        tokio::time::sleep(Duration::from_millis(250)).await;
        progress.bytes_written.store(1234, Relaxed);
        let samples = sampler.stop().await;
        let kept = samples.as_slice();
        assert!(kept.len() >= 2, "{kept:?}");
        let last = kept.last().unwrap();
        assert_eq!(last.written_bytes, 1234);
        assert!(last.rss_bytes > 1 << 20);
        assert!(kept.windows(2).all(|w| w[0].seconds <= w[1].seconds));
    }
}
