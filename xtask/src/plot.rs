//! `cargo xtask plot` (and the end of `cargo xtask bench`): the figures of the last bench run
//! (target/bench/lab.json and dataplane.json) drawn as SVG files beside them. For each fault
//! and advert interval the outage distributions of xvrrp and keepalived (empirical CDFs, one
//! point per trial) with the protocol's floor (Master_Down_Interval minus the phase at which the
//! fault came, per trial); the MySQL failover times; the ARP answer rate against the kernel's.
//! Each picture names the commit it measures.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use plotters::prelude::*;
use serde_json::Value;

const XVRRP: RGBColor = RGBColor(31, 119, 180);
const KEEPALIVED: RGBColor = RGBColor(214, 39, 40);
const FLOOR: RGBColor = RGBColor(60, 60, 60);

/// Draws every figure the JSON files in `dir` hold; the files written.
pub fn run(dir: &Path, commit: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let lab = dir.join("lab.json");
    if lab.exists() {
        let json = read(&lab)?;
        let commit = measured(&json, commit);
        written.extend(outages(dir, &json, &commit)?);
        if let Some(path) = mysql(dir, &json, &commit)? {
            written.push(path);
        }
    }
    let dataplane = dir.join("dataplane.json");
    if dataplane.exists() {
        let json = read(&dataplane)?;
        if let Some(path) = arp_rate(dir, &json, &measured(&json, commit))? {
            written.push(path);
        }
    }
    Ok(written)
}

/// The commit a run measured (older runs did not say: then the one plotting).
fn measured(json: &BTreeMap<String, Value>, plotting: &str) -> String {
    json.get("commit")
        .and_then(Value::as_str)
        .map_or_else(|| format!("plotted at {plotting}"), str::to_owned)
}

fn read(path: &Path) -> anyhow::Result<BTreeMap<String, Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn numbers(v: Option<&Value>, key: &str) -> Vec<f64> {
    v.and_then(|v| v[key].as_array())
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// (x, fraction of trials at or below x), sorted.
fn cdf(mut values: Vec<f64>) -> Vec<(f64, f64)> {
    values.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| (v, (i + 1) as f64 / n))
        .collect()
}

/// A file name from a figure's key ("100ms.SIGKILL (host crash)" -> "100ms-sigkill-host-crash").
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

type Series = (String, RGBColor, Vec<f64>, bool);

/// One CDF chart: each series a line (dashed for a floor), x from 0 to past the largest value;
/// the legend where the lines are not (`legend`).
fn cdf_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[Series],
    legend: SeriesLabelPosition,
) -> anyhow::Result<()> {
    let max = series
        .iter()
        .flat_map(|(_, _, v, _)| v.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.1;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("fraction of trials")
        .draw()?;
    for (name, color, values, dashed) in series {
        if values.is_empty() {
            continue;
        }
        // A step function: each trial raises the fraction at its value.
        let mut points = vec![(0.0, 0.0)];
        let mut last = 0.0;
        for (x, y) in cdf(values.clone()) {
            points.push((x, last));
            points.push((x, y));
            last = y;
        }
        points.push((max, last));
        let style = color.stroke_width(2);
        let drawn = if *dashed {
            chart.draw_series(DashedLineSeries::new(points, 6, 4, style))?
        } else {
            chart.draw_series(LineSeries::new(points, style))?
        };
        drawn.label(name.as_str()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
        });
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn outages(
    dir: &Path,
    json: &BTreeMap<String, Value>,
    commit: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    // outage.<daemon>.<interval>ms.<fault>
    let mut cells: Vec<String> = json
        .keys()
        .filter_map(|k| k.strip_prefix("outage.xvrrp."))
        .map(str::to_owned)
        .collect();
    cells.sort_by_key(|c| {
        (
            c.split("ms.").next().and_then(|i| i.parse::<u32>().ok()),
            c.clone(),
        )
    });
    let mut written = Vec::new();
    for cell in cells {
        let (interval, fault) = cell.split_once('.').unwrap_or((&cell, ""));
        let path = dir.join(format!("outage-{}.svg", slug(&cell)));
        let mut series: Vec<Series> = vec![
            (
                "xvrrp".into(),
                XVRRP,
                numbers(json.get(&format!("outage.xvrrp.{cell}")), "gaps_ms"),
                false,
            ),
            (
                "keepalived".into(),
                KEEPALIVED,
                numbers(json.get(&format!("outage.keepalived.{cell}")), "gaps_ms"),
                false,
            ),
        ];
        let floors = numbers(json.get(&format!("floor.{cell}")), "floors_ms");
        let crash_like = !floors.is_empty();
        if crash_like {
            series.push((
                "VRRP floor (Master_Down_Interval - phase)".into(),
                FLOOR,
                floors,
                true,
            ));
        }
        // A crash-like fault's lines all start late (the floor): the upper left is empty. A
        // graceful stop's rise at both ends: the middle is.
        let legend = if !crash_like {
            SeriesLabelPosition::MiddleMiddle
        } else {
            SeriesLabelPosition::UpperLeft
        };
        cdf_chart(
            &path,
            &format!("failover outage, {interval} adverts, {fault} ({commit})"),
            "outage seen by the client (ms)",
            &series,
            legend,
        )?;
        written.push(path);
    }
    Ok(written)
}

fn mysql(
    dir: &Path,
    json: &BTreeMap<String, Value>,
    commit: &str,
) -> anyhow::Result<Option<PathBuf>> {
    let x = numbers(json.get("mysql_failover.xvrrp"), "ms");
    let k = numbers(json.get("mysql_failover.keepalived"), "ms");
    if x.is_empty() && k.is_empty() {
        return Ok(None);
    }
    let path = dir.join("mysql-failover.svg");
    cdf_chart(
        &path,
        &format!(
            "mysqld SIGKILLed on the master: until the VIP answers from the other server ({commit})"
        ),
        "time to the first answered query (ms)",
        &[
            ("xvrrp".into(), XVRRP, x, false),
            ("keepalived".into(), KEEPALIVED, k, false),
        ],
        SeriesLabelPosition::MiddleMiddle,
    )?;
    Ok(Some(path))
}

fn arp_rate(
    dir: &Path,
    json: &BTreeMap<String, Value>,
    commit: &str,
) -> anyhow::Result<Option<PathBuf>> {
    let bars: Vec<(String, f64)> = json
        .get("arp_answers_pps")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    Some((
                        r["responder"].as_str()?.to_owned(),
                        r["pps"].as_f64()? / 1e6,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if bars.is_empty() {
        return Ok(None);
    }
    let path = dir.join("arp-rate.svg");
    let max = bars.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max) * 1.15;
    let root = SVGBackend::new(&path, (720, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("ARP replies per second on one veth, one core ({commit})"),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..bars.len() as f64, 0.0..max)?;
    let names: Vec<String> = bars.iter().map(|(n, _)| n.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = *x - 0.5;
            if i.fract().abs() < 1e-9 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("million replies / s")
        .draw()?;
    for (i, (name, v)) in bars.iter().enumerate() {
        let color = if name.contains("xvrrp") { XVRRP } else { FLOOR };
        let x = i as f64;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x + 0.2, 0.0), (x + 0.8, *v)],
            color.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{v:.2} M/s"),
            (x + 0.35, *v + max * 0.03),
            ("sans-serif", 14),
        )))?;
    }
    root.present()?;
    drop(chart);
    drop(root);
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bench_run_is_drawn_with_its_commit_its_floor_and_both_daemons() {
        let dir = std::env::temp_dir().join(format!("xvrrp-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("lab.json"),
            r#"{"commit": "abc1234 2026-11-26",
                "outage.xvrrp.20ms.SIGKILL (host crash)": {"gaps_ms": [55.0, 61.0, 66.0]},
                "outage.keepalived.20ms.SIGKILL (host crash)": {"gaps_ms": [70.0, 74.0]},
                "floor.20ms.SIGKILL (host crash)": {"floors_ms": [57.0, 63.0, 69.0]},
                "mysql_failover.xvrrp": {"ms": [15.0]},
                "mysql_failover.keepalived": {"ms": [1446.0]}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("dataplane.json"),
            r#"{"arp_answers_pps": [{"responder": "kernel (VIP on the interface)", "pps": 1.7e6},
                                    {"responder": "xvrrp XDP", "pps": 1.05e7}]}"#,
        )
        .unwrap();
        let written = run(&dir, "def5678 2026-11-27").unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "outage-20ms-sigkill-host-crash.svg",
                "mysql-failover.svg",
                "arp-rate.svg"
            ]
        );
        let outage = std::fs::read_to_string(&written[0]).unwrap();
        // The run's own commit, not the one plotting; both daemons and the floor.
        assert!(outage.contains("abc1234 2026-11-26"), "{outage}");
        for label in ["xvrrp", "keepalived", "VRRP floor"] {
            assert!(outage.contains(label), "{label}");
        }
        // A run that did not record its commit is dated by the one plotting.
        let rate = std::fs::read_to_string(&written[2]).unwrap();
        assert!(rate.contains("plotted at def5678"), "{rate}");
        assert!(
            rate.contains("10.50 M/s") && rate.contains("1.70 M/s"),
            "{rate}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
