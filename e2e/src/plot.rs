//! PNG plots of benchmark results (plotters, bitmap backend). Text needs a
//! TrueType font: `RAFTCRON_PLOT_FONT`, else DejaVu Sans from the system.

use std::path::Path;

use plotters::prelude::*;

const W: u32 = 900;
const H: u32 = 560;

/// Loads the font once; the plots need it for labels.
pub fn init_font() -> anyhow::Result<()> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let path = std::env::var("RAFTCRON_PLOT_FONT")
            .unwrap_or_else(|_| "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into());
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("font {path}: {e} (set RAFTCRON_PLOT_FONT)"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("font {path} is not a usable TrueType font"))
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

fn colors() -> [RGBColor; 6] {
    [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ]
}

/// Cumulative distribution of lateness (ms, log x axis), one line per series.
pub fn lateness_cdf(path: &Path, title: &str, series: &[(String, Vec<f64>)]) -> anyhow::Result<()> {
    init_font()?;
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.last().copied())
        .fold(1.0f64, f64::max);
    let min = series
        .iter()
        .flat_map(|(_, v)| v.first().copied())
        .fold(max, f64::min)
        .max(0.01);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((min..max * 1.1).log_scale(), 0f64..1.0)?;
    chart
        .configure_mesh()
        .x_desc("lateness (ms, log scale)")
        .y_desc("fraction of fires")
        .draw()?;
    for (i, (label, values)) in series.iter().enumerate() {
        let n = values.len().max(1) as f64;
        let color = colors()[i % 6];
        let step = (values.len() / 2000).max(1);
        let points = values
            .iter()
            .enumerate()
            .step_by(step)
            .map(|(k, v)| (v.max(min), (k + 1) as f64 / n));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Failover gap per trial (ms), one marker series per configuration.
pub fn failover(path: &Path, series: &[(String, Vec<f64>)]) -> anyhow::Result<()> {
    init_font()?;
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let trials = series.iter().map(|(_, v)| v.len()).max().unwrap_or(1) as f64;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(100.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "kill -9 of the leader → next fire executed (or next write accepted)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..trials + 1.0, 0f64..max * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("trial")
        .y_desc("gap (ms)")
        .draw()?;
    for (i, (label, values)) in series.iter().enumerate() {
        let color = colors()[i % 6];
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .map(|(k, v)| Circle::new(((k + 1) as f64, *v), 5, color.filled())),
            )?
            .label(label.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Committed writes/s against the number of clients, one line per system.
pub fn throughput(path: &Path, series: &[(String, Vec<(f64, f64)>)]) -> anyhow::Result<()> {
    init_font()?;
    let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_x = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let max_y = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "committed writes per second against concurrent clients",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..max_x * 1.2).log_scale(), 0f64..max_y * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("clients (log scale)")
        .y_desc("writes/s")
        .draw()?;
    for (i, (label, points)) in series.iter().enumerate() {
        let color = colors()[i % 6];
        chart
            .draw_series(
                LineSeries::new(points.iter().copied(), color.stroke_width(2)).point_size(4),
            )?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
