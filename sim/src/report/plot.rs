//! Timeline plots of one run (plotters), PNG and SVG, read at a glance: one lane per node with
//! its down, paused and partitioned spans, the current and compact revisions over time, compaction ticks
//! by outcome, injected faults, and the first violation of each failing check. A run that
//! replays a schedule (a shrunk run) gets lanes only for the nodes its faults touched, and every
//! fault is labelled with its node, so what is left of the cause shows at a glance.
//!
//! Runs after the simulation; uses the DejaVu font embedded by the `dejavu` crate, so no system
//! fonts are needed. Everything drawn comes from the history, in a fixed order.

use crate::history::{EventKind, History};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use store::observe::{BatchOutcome, StoreEvent};

const WIDTH: u32 = 1600;
const HEIGHT: u32 = 900;
const UP: RGBColor = RGBColor(120, 190, 120);
const DOWN: RGBColor = RGBColor(210, 40, 40);
const CUT: RGBColor = RGBColor(245, 150, 30);
const ABSENT: RGBColor = RGBColor(225, 225, 225);
const PAUSED: RGBColor = RGBColor(70, 140, 220);
const TICK_OK: RGBColor = RGBColor(30, 150, 60);
const TICK_SKIPPED: RGBColor = RGBColor(150, 150, 150);
const FAULT: RGBColor = RGBColor(140, 60, 170);
const CURRENT: RGBColor = RGBColor(40, 90, 200);
const COMPACT: RGBColor = RGBColor(20, 20, 20);

/// A check's first violation: (check name, simulated ns, message).
pub type Marker = (String, u64, String);

fn register_font() {
    // Registering twice is harmless; plotters keeps the last registration.
    let _ =
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Everything the picture shows, extracted from the history once.
struct Timeline {
    end: f64,
    quiet_from: f64,
    nodes: Vec<String>,
    down: Vec<(String, f64, f64)>,
    cut: Vec<(String, f64, f64)>,
    /// Paused (tasks and timers stopped): until resumed, or killed.
    paused: Vec<(String, f64, f64)>,
    /// Not in the cluster: a server before it joined, or after it left.
    absent: Vec<(String, f64, f64)>,
    current: Vec<(f64, i64)>,
    compact: Vec<(f64, i64)>,
    /// (time, in-memory compact revision, outcome) per tick.
    ticks: Vec<(f64, i64, TickOutcome)>,
    faults: Vec<(f64, String)>,
    /// A live run: real time, and revisions as clients saw them.
    live: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum TickOutcome {
    Ok,
    Failed,
    Skipped,
}

fn extract(h: &History, focus: bool) -> Timeline {
    let end = secs(h.params.end_ns.max(1));
    let mut touched: std::collections::BTreeSet<String> = Default::default();
    let mut nodes: Vec<String> = Vec::new();
    let node = |n: &str, nodes: &mut Vec<String>| {
        if n != "world" && !nodes.iter().any(|x| x == n) {
            nodes.push(n.to_string());
        }
    };
    let (mut down, mut cut, mut absent) = (Vec::new(), Vec::new(), Vec::new());
    let mut killed: BTreeMap<String, f64> = BTreeMap::new();
    let mut paused_since: BTreeMap<String, f64> = BTreeMap::new();
    let mut paused = Vec::new();
    let mut open_cuts: Vec<(Vec<String>, f64)> = Vec::new();
    let (mut current, mut compact) = (vec![(0.0, 0)], vec![(0.0, 0)]);
    let mut open_ticks: BTreeMap<String, usize> = BTreeMap::new();
    let mut ticks: Vec<(f64, i64, TickOutcome)> = Vec::new();
    let mut faults = Vec::new();
    for e in &h.events {
        let t = secs(e.at_ns);
        match &e.kind {
            EventKind::NodeStarted => node(&e.node, &mut nodes),
            EventKind::NodeKilled => {
                touched.insert(e.node.clone());
                // A kill ends a pause: the node is resumed and killed at once.
                if let Some(from) = paused_since.remove(&e.node) {
                    paused.push((e.node.clone(), from, t));
                }
                killed.insert(e.node.clone(), t);
                faults.push((t, format!("kill {}", e.node)));
            }
            EventKind::NodeRestarted => {
                if let Some(from) = killed.remove(&e.node) {
                    down.push((e.node.clone(), from, t));
                }
            }
            EventKind::NodePaused => {
                touched.insert(e.node.clone());
                paused_since.insert(e.node.clone(), t);
                faults.push((t, format!("pause {}", e.node)));
            }
            EventKind::NodeResumed => {
                if let Some(from) = paused_since.remove(&e.node) {
                    paused.push((e.node.clone(), from, t));
                }
            }
            // A server is out of the cluster before it joins and after it leaves.
            EventKind::ServerJoined { via, .. } => {
                touched.insert(e.node.clone());
                node(&e.node, &mut nodes);
                absent.push((e.node.clone(), 0.0, t));
                faults.push((t, format!("{} joins via {via}", e.node)));
            }
            EventKind::ServerLeft { .. } => {
                touched.insert(e.node.clone());
                if let Some(from) = killed.remove(&e.node) {
                    down.push((e.node.clone(), from, t));
                }
                absent.push((e.node.clone(), t, end));
                faults.push((t, format!("{} leaves", e.node)));
            }
            EventKind::PartitionStarted { from, to, .. } => {
                let mut members = from.clone();
                members.extend(to.iter().cloned());
                touched.extend(members.iter().cloned());
                open_cuts.push((members, t));
                let label = if focus {
                    format!("partition {} | {}", from.join(","), to.join(","))
                } else {
                    "partition".into()
                };
                faults.push((t, label));
            }
            EventKind::PartitionHealed { from, to, .. } => {
                let mut members = from.clone();
                members.extend(to.iter().cloned());
                if let Some(i) = open_cuts.iter().position(|(m, _)| *m == members) {
                    let (members, start) = open_cuts.remove(i);
                    for m in members {
                        cut.push((m, start, t));
                    }
                }
            }
            EventKind::Store { event } => match event {
                StoreEvent::DbInsert { id, .. } => {
                    // With a mysql-like database ids commit out of order; current is the highest.
                    let top = current.last().map_or(0, |c| c.1);
                    current.push((t, top.max(*id)));
                }
                StoreEvent::DbCompact {
                    committed: true,
                    stored_after,
                    ..
                } => compact.push((t, *stored_after)),
                StoreEvent::CompactTickStart {
                    compact_revision, ..
                } => {
                    open_ticks.insert(e.node.clone(), ticks.len());
                    ticks.push((t, *compact_revision, TickOutcome::Skipped));
                }
                StoreEvent::CompactBatch { outcome, .. } => {
                    if let Some(&i) = open_ticks.get(&e.node) {
                        match outcome {
                            BatchOutcome::Failed { .. } => ticks[i].2 = TickOutcome::Failed,
                            BatchOutcome::Committed { .. }
                                if ticks[i].2 == TickOutcome::Skipped =>
                            {
                                ticks[i].2 = TickOutcome::Ok
                            }
                            _ => {}
                        }
                    }
                }
                StoreEvent::CompactTickEnd { .. } => {
                    open_ticks.remove(&e.node);
                }
                StoreEvent::FaultInjected { fault, .. } => {
                    touched.insert(e.node.clone());
                    faults.push((t, format!("{fault} {}", e.node)));
                }
                _ => {}
            },
            EventKind::FaultsStopped | EventKind::NotReady { .. } => {}
        }
    }
    for (n, from) in killed {
        down.push((n, from, end));
    }
    for (n, from) in paused_since {
        paused.push((n, from, end));
    }
    for o in &h.ops {
        node(&o.client, &mut nodes);
    }
    nodes.retain(|n| n != "audit" && !n.contains('#'));
    if focus && !touched.is_empty() {
        nodes.retain(|n| touched.contains(n));
    }
    if h.params.live {
        // No store events: the highest revision a client was answered at, and the compactions
        // the store acknowledged, as they arrived.
        let mut answers: Vec<(u64, i64)> = h
            .ops
            .iter()
            .filter_map(|o| o.outcome.header_revision().map(|r| (o.complete_ns, r)))
            .collect();
        answers.sort_unstable();
        for (t, r) in answers {
            let top = current.last().map_or(0, |c| c.1);
            if r > top {
                current.push((secs(t), r));
            }
        }
        for c in h.compactions.iter().filter(|c| c.outcome == "ok") {
            let top = compact.last().map_or(0, |c| c.1);
            compact.push((secs(c.complete_ns), top.max(c.revision)));
        }
    }
    if let Some(last) = current.last().copied() {
        current.push((end, last.1));
    }
    if let Some(last) = compact.last().copied() {
        compact.push((end, last.1));
    }
    Timeline {
        end,
        quiet_from: secs(h.params.faults_stop_ns),
        nodes,
        down,
        cut,
        paused,
        absent,
        current,
        compact,
        ticks,
        faults,
        live: h.params.live,
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    tl: &Timeline,
    title: &str,
    marks: &[Marker],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let root = root
        .titled(title, ("sans-serif", 26).into_font())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let lanes_height = (80 + 34 * tl.nodes.len() as u32).min(HEIGHT / 2);
    let (top, bottom) = root.split_vertically(lanes_height);
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e:?}");

    // Lanes: one per node, bottom-up in creation order reversed so the first node is on top.
    let n = tl.nodes.len().max(1);
    let mut lanes = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(0)
        .y_label_area_size(110)
        .build_cartesian_2d(0.0..tl.end, 0.0..n as f64)
        .map_err(err)?;
    let names = tl.nodes.clone();
    lanes
        .configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (y - 0.5).round();
            if (y - 0.5 - i).abs() > 0.01 || i < 0.0 || i as usize >= names.len() {
                return String::new();
            }
            names[names.len() - 1 - i as usize].clone()
        })
        .y_label_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    let lane_of = |name: &str| {
        tl.nodes
            .iter()
            .position(|x| x == name)
            .map(|i| (n - 1 - i) as f64)
    };
    for name in &tl.nodes {
        let y = lane_of(name).expect("listed");
        lanes
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.42), (tl.end, y + 0.58)],
                UP.filled(),
            )))
            .map_err(err)?;
    }
    let spans =
        |list: &[(String, f64, f64)], color: RGBColor, half: f64| -> Vec<Rectangle<(f64, f64)>> {
            list.iter()
                .filter_map(|(name, a, b)| {
                    lane_of(name).map(|y| {
                        Rectangle::new(
                            [
                                (*a, y + 0.5 - half),
                                (b.max(*a + tl.end / 400.0), y + 0.5 + half),
                            ],
                            color.filled(),
                        )
                    })
                })
                .collect()
        };
    lanes
        .draw_series(spans(&tl.cut, CUT, 0.22))
        .map_err(err)?
        .label("partitioned")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], CUT.filled()));
    lanes
        .draw_series(spans(&tl.down, DOWN, 0.3))
        .map_err(err)?
        .label("down (killed)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], DOWN.filled()));
    if !tl.paused.is_empty() {
        lanes
            .draw_series(spans(&tl.paused, PAUSED, 0.26))
            .map_err(err)?
            .label("paused (tasks and timers stopped)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], PAUSED.filled()));
    }
    if !tl.absent.is_empty() {
        // Drawn last: whatever the schedule aimed at a server outside the cluster missed.
        lanes
            .draw_series(spans(&tl.absent, ABSENT, 0.32))
            .map_err(err)?
            .label("not in the cluster (before joining, after leaving)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], ABSENT.filled()));
    }
    lanes
        .draw_series(std::iter::once(Rectangle::new(
            [(0.0, -1.0), (0.0, -1.0)],
            UP.filled(),
        )))
        .map_err(err)?
        .label("up")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], UP.filled()));
    lanes
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;

    // Revisions.
    let max_rev = tl.current.iter().map(|(_, r)| *r).max().unwrap_or(1).max(1) as f64 * 1.08;
    let mut revs = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(110)
        .build_cartesian_2d(0.0..tl.end, 0.0..max_rev)
        .map_err(err)?;
    revs.configure_mesh()
        .x_desc(if tl.live {
            "time (s)"
        } else {
            "simulated time (s)"
        })
        .y_desc("revision")
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let shade = tl.quiet_from.min(tl.end);
    revs.draw_series(std::iter::once(Rectangle::new(
        [(shade, 0.0), (tl.end, max_rev)],
        RGBColor(235, 245, 235).filled(),
    )))
    .map_err(err)?
    .label("quiet period (no faults)")
    .legend(|(x, y)| {
        Rectangle::new(
            [(x, y - 5), (x + 16, y + 5)],
            RGBColor(215, 235, 215).filled(),
        )
    });
    let step = |pts: &[(f64, i64)]| -> Vec<(f64, f64)> {
        let mut out = Vec::with_capacity(pts.len() * 2);
        for w in pts.windows(2) {
            out.push((w[0].0, w[0].1 as f64));
            out.push((w[1].0, w[0].1 as f64));
        }
        if let Some(l) = pts.last() {
            out.push((l.0, l.1 as f64));
        }
        out
    };
    revs.draw_series(LineSeries::new(step(&tl.current), CURRENT.stroke_width(2)))
        .map_err(err)?
        .label(if tl.live {
            "revision clients were answered at"
        } else {
            "current revision"
        })
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], CURRENT.stroke_width(2)));
    revs.draw_series(LineSeries::new(step(&tl.compact), COMPACT.stroke_width(2)))
        .map_err(err)?
        .label(if tl.live {
            "compact revision (acknowledged Compact)"
        } else {
            "stored compact revision"
        })
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], COMPACT.stroke_width(2)));
    for (kind, color, label) in [
        (TickOutcome::Ok, TICK_OK, "compaction tick: compacted"),
        (TickOutcome::Failed, DOWN, "compaction tick: a batch failed"),
        (
            TickOutcome::Skipped,
            TICK_SKIPPED,
            "compaction tick: nothing compacted",
        ),
    ] {
        let pts: Vec<(f64, f64)> = tl
            .ticks
            .iter()
            .filter(|t| t.2 == kind)
            .map(|t| (t.0, t.1 as f64))
            .collect();
        revs.draw_series(pts.iter().map(|p| Circle::new(*p, 5, color.filled())))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
    }
    let fault_y = max_rev * 0.97;
    revs.draw_series(
        tl.faults
            .iter()
            .map(|(t, _)| TriangleMarker::new((*t, fault_y), 6, FAULT.filled())),
    )
    .map_err(err)?
    .label("injected fault")
    .legend(|(x, y)| TriangleMarker::new((x + 8, y), 6, FAULT.filled()));
    for (check, at, _) in marks {
        let t = secs(*at);
        revs.draw_series(std::iter::once(PathElement::new(
            vec![(t, 0.0), (t, max_rev)],
            DOWN.stroke_width(3),
        )))
        .map_err(err)?;
        revs.draw_series(std::iter::once(Text::new(
            format!("first violation: {check} at {t:.1}s"),
            (t, max_rev * 0.9),
            ("sans-serif", 16).into_font().color(&DOWN),
        )))
        .map_err(err)?;
    }
    if !marks.is_empty() {
        revs.draw_series(std::iter::once(PathElement::new(
            vec![(0.0, -1.0), (0.0, -1.0)],
            DOWN.stroke_width(3),
        )))
        .map_err(err)?
        .label("first violation of a check")
        .legend(|(x, y)| {
            PathElement::new(vec![(x + 8, y - 6), (x + 8, y + 6)], DOWN.stroke_width(3))
        });
    }
    revs.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Writes `timeline.png` and `timeline.svg` for one run.
/// Draws the timeline; with `focus` (a replayed schedule), only the nodes faults touched.
pub fn timeline(
    h: &History,
    title: &str,
    marks: &[Marker],
    focus: bool,
    png: &Path,
    svg: &Path,
) -> anyhow::Result<()> {
    register_font();
    let tl = extract(h, focus);
    draw(
        BitMapBackend::new(png, (WIDTH, HEIGHT)).into_drawing_area(),
        &tl,
        title,
        marks,
    )?;
    draw(
        SVGBackend::new(svg, (WIDTH, HEIGHT)).into_drawing_area(),
        &tl,
        title,
        marks,
    )?;
    Ok(())
}

/// One seed's outcome in a campaign: (scenario, seed, failed checks; empty when it passed).
pub type SeedOutcome<'a> = (&'a str, u64, Vec<&'a str>);

fn draw_outcomes<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    seeds: &[SeedOutcome<'_>],
    title: &str,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(title, ("sans-serif", 24).into_font())
        .map_err(err)?;
    // Rows: "<scenario>: pass" first, then one per failing check, per scenario.
    let mut rows: Vec<(String, String)> = Vec::new();
    for (scenario, _, checks) in seeds {
        let pass = (scenario.to_string(), String::new());
        if !rows.contains(&pass) {
            rows.push(pass);
        }
        for c in checks {
            let row = (scenario.to_string(), c.to_string());
            if !rows.contains(&row) {
                rows.push(row);
            }
        }
    }
    rows.sort();
    let lo = seeds.iter().map(|s| s.1).min().unwrap_or(0) as f64;
    let hi = seeds.iter().map(|s| s.1).max().unwrap_or(0) as f64 + 1.0;
    let n = rows.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(330)
        .build_cartesian_2d(lo..hi, 0.0..n as f64)
        .map_err(err)?;
    let labels = rows.clone();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("seed")
        .axis_desc_style(("sans-serif", 16))
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (y - 0.5).round();
            if (y - 0.5 - i).abs() > 0.01 || i < 0.0 || i as usize >= labels.len() {
                return String::new();
            }
            let (s, c) = &labels[labels.len() - 1 - i as usize];
            if c.is_empty() {
                format!("{s}: passed")
            } else {
                format!("{s}: {c} failed")
            }
        })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    let row_of = |s: &str, c: &str| {
        rows.iter()
            .position(|r| r.0 == s && r.1 == c)
            .map(|i| (n - 1 - i) as f64)
    };
    let mut cells = Vec::new();
    for (scenario, seed, checks) in seeds {
        let x = *seed as f64;
        if checks.is_empty() {
            if let Some(y) = row_of(scenario, "") {
                cells.push(Rectangle::new(
                    [(x + 0.1, y + 0.2), (x + 0.9, y + 0.8)],
                    UP.filled(),
                ));
            }
        }
        for c in checks {
            if let Some(y) = row_of(scenario, c) {
                cells.push(Rectangle::new(
                    [(x + 0.1, y + 0.2), (x + 0.9, y + 0.8)],
                    DOWN.filled(),
                ));
            }
        }
    }
    chart.draw_series(cells).map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Writes a campaign's outcomes across seeds: one row per scenario's passes and per failing
/// check, one cell per seed.
pub fn outcomes(
    seeds: &[SeedOutcome<'_>],
    title: &str,
    png: &Path,
    svg: &Path,
) -> anyhow::Result<()> {
    register_font();
    let mut rows: Vec<(&str, &str)> = Vec::new();
    for (s, _, checks) in seeds {
        rows.push((s, ""));
        rows.extend(checks.iter().map(|c| (*s, *c)));
    }
    rows.sort();
    rows.dedup();
    let height = 150 + 70 * rows.len().max(1) as u32;
    draw_outcomes(
        BitMapBackend::new(png, (WIDTH, height)).into_drawing_area(),
        seeds,
        title,
    )?;
    draw_outcomes(
        SVGBackend::new(svg, (WIDTH, height)).into_drawing_area(),
        seeds,
        title,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::testutil::*;
    use crate::history::WorldEvent;

    #[test]
    fn renders_lanes_revisions_and_violations_to_png_and_svg() {
        let mut h = history();
        h.params.end_ns = 100 * S;
        h.params.faults_stop_ns = 80 * S;
        for (t, n, k) in [
            (0, "kine-1", EventKind::NodeStarted),
            (0, "client-1", EventKind::NodeStarted),
            (20, "kine-1", EventKind::NodeKilled),
            (25, "kine-1", EventKind::NodeRestarted),
        ] {
            h.events.push(WorldEvent {
                at_ns: t * S,
                node: n.into(),
                kind: k,
            });
        }
        inserts(&mut h, 10.0, 1, 300);
        let dir = std::env::temp_dir().join(format!("faultline-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (png, svg) = (dir.join("t.png"), dir.join("t.svg"));
        let marks = vec![(
            "compactor-continuity".to_string(),
            50 * S,
            "stalled".to_string(),
        )];
        timeline(&h, "test run", &marks, false, &png, &svg).unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
        let text = std::fs::read_to_string(&svg).unwrap();
        for needle in [
            "kine-1",
            "client-1",
            "current revision",
            "first violation: compactor-continuity",
            "simulated time (s)",
        ] {
            assert!(text.contains(needle), "{needle} missing from the SVG");
        }
    }

    #[test]
    fn a_replayed_schedule_draws_only_the_nodes_its_faults_touched() {
        let mut h = history();
        h.params.end_ns = 100 * S;
        let cut = |from: &str, to: &str| EventKind::PartitionStarted {
            from: vec![from.into()],
            to: vec![to.into()],
            one_way: false,
        };
        for (t, n, k) in [
            (0, "kine-1", EventKind::NodeStarted),
            (0, "kine-2", EventKind::NodeStarted),
            (0, "kine-3", EventKind::NodeStarted),
            (0, "client-1", EventKind::NodeStarted),
            (10, "world", cut("kine-2", "db")),
            (20, "kine-3", EventKind::NodeKilled),
        ] {
            h.events.push(WorldEvent {
                at_ns: t * S,
                node: n.into(),
                kind: k,
            });
        }
        assert_eq!(
            extract(&h, false).nodes,
            ["kine-1", "kine-2", "kine-3", "client-1"]
        );
        let focused = extract(&h, true);
        assert_eq!(
            focused.nodes,
            ["kine-2", "kine-3"],
            "only what the faults touched"
        );
        assert_eq!(focused.faults[0].1, "partition kine-2 | db");
        assert_eq!(focused.faults[1].1, "kill kine-3");
    }

    #[test]
    fn a_server_is_out_of_the_cluster_before_it_joins_and_after_it_leaves() {
        let mut h = history();
        h.params.end_ns = 100 * S;
        let joined = EventKind::ServerJoined {
            via: "server-1".into(),
            replacing: Some("server-2".into()),
        };
        let left = EventKind::ServerLeft {
            replaced_by: Some("server-4".into()),
        };
        for (t, n, k) in [
            (0, "server-2", EventKind::NodeStarted),
            (20, "server-2", EventKind::NodeKilled),
            (30, "server-2", left),
            (30, "server-4", joined),
        ] {
            h.events.push(WorldEvent {
                at_ns: t * S,
                node: n.into(),
                kind: k,
            });
        }
        let tl = extract(&h, false);
        assert!(tl.paused.is_empty());
        assert_eq!(tl.nodes, vec!["server-2", "server-4"]);
        assert_eq!(tl.down, vec![("server-2".to_string(), 20.0, 30.0)]);
        assert_eq!(
            tl.absent,
            vec![
                ("server-2".to_string(), 30.0, 100.0),
                ("server-4".to_string(), 0.0, 30.0)
            ]
        );
    }

    #[test]
    fn a_pause_is_a_span_ended_by_its_resume_or_a_kill_and_drawn() {
        let mut h = history();
        h.params.end_ns = 100 * S;
        h.params.faults_stop_ns = 80 * S;
        for (t, n, k) in [
            (0, "kine-1", EventKind::NodeStarted),
            (0, "kine-2", EventKind::NodeStarted),
            (0, "kine-3", EventKind::NodeStarted),
            (10, "kine-1", EventKind::NodePaused),
            (14, "kine-1", EventKind::NodeResumed),
            (20, "kine-2", EventKind::NodePaused),
            (22, "kine-2", EventKind::NodeKilled),
            (30, "kine-2", EventKind::NodeRestarted),
            (40, "kine-3", EventKind::NodePaused),
        ] {
            h.events.push(WorldEvent {
                at_ns: t * S,
                node: n.into(),
                kind: k,
            });
        }
        let tl = extract(&h, true);
        assert_eq!(
            tl.paused,
            vec![
                ("kine-1".to_string(), 10.0, 14.0),
                ("kine-2".to_string(), 20.0, 22.0),
                ("kine-3".to_string(), 40.0, 100.0),
            ]
        );
        assert_eq!(tl.down, vec![("kine-2".to_string(), 22.0, 30.0)]);
        assert_eq!(tl.faults[0].1, "pause kine-1");
        assert_eq!(tl.nodes, ["kine-1", "kine-2", "kine-3"]);
        let dir = std::env::temp_dir().join(format!("faultline-pause-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (png, svg) = (dir.join("t.png"), dir.join("t.svg"));
        timeline(&h, "paused run", &[], true, &png, &svg).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.contains("paused (tasks and timers stopped)"),
            "legend missing"
        );
    }
}
