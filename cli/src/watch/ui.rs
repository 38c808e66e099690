//! The dashboard of `esper watch`, drawn with ratatui from a [`RunView`] and the keys'
//! state ([`UiState`]) alone: the epoch table, the training and validation curves with
//! the lifecycle events marked, the slot grid (coloured by stage), and the event log,
//! or the selected slot's history. Laid out for 80x24 and larger.

use super::view::{Level, Logged, RunView};
use esper_runtime::lifecycle::{LifecycleEvent, SeedStage};
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    symbols::Marker,
    text::{Line, Span},
    widgets::{Axis, Block, Cell, Chart, Clear, Dataset, GraphType, Paragraph, Row, Table},
    Frame,
};

/// What the keys changed: the selected slot and whether the help is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UiState {
    /// The index of the selected slot in the grid (its history replaces the event log).
    pub selected: Option<usize>,
    pub help: bool,
}

impl UiState {
    /// Moves the selection down (`+1`) or up (`-1`) among `slots` slots.
    pub fn select(&mut self, delta: i32, slots: usize) {
        if slots == 0 {
            self.selected = None;
            return;
        }
        self.selected = Some(match self.selected {
            None if delta < 0 => slots - 1,
            None => 0,
            Some(i) => (i as i64 + delta as i64).rem_euclid(slots as i64) as usize,
        });
    }
}

/// The colour of a stage in the grid and the log.
pub fn stage_color(stage: SeedStage) -> Color {
    match stage {
        SeedStage::Unknown | SeedStage::Dormant | SeedStage::Resetting => Color::DarkGray,
        SeedStage::Germinated => Color::Cyan,
        SeedStage::Training => Color::Blue,
        SeedStage::Blending => Color::Yellow,
        SeedStage::Holding => Color::Magenta,
        SeedStage::Fossilized => Color::Green,
        SeedStage::Pruned | SeedStage::Embargoed => Color::Red,
    }
}

/// Draws the whole dashboard.
pub fn draw(frame: &mut Frame, view: &RunView, ui: &UiState) {
    let slots = view.slots().len().max(1) as u16;
    let [title, top, grid, log, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(9),
        Constraint::Length(slots + 3),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_title(frame, title, view);
    let [table, chart] = Layout::horizontal([Constraint::Length(44), Constraint::Min(20)]).areas(top);
    draw_epochs(frame, table, view);
    draw_chart(frame, chart, view);
    draw_slots(frame, grid, view, ui);
    match ui.selected.and_then(|i| view.slots().get(i)) {
        Some(slot) => draw_slot_history(frame, log, view, &slot.slot),
        None => draw_log(frame, log, view),
    }
    let help = Line::from(vec![
        Span::styled(" q", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(" quit  "),
        Span::styled("↑/↓", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(" select a slot  "),
        Span::styled("esc", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(" event log  "),
        Span::styled("?", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(" help"),
    ]);
    match &view.problem {
        Some(problem) => frame.render_widget(Paragraph::new(format!(" {problem}")).style(Color::Red), keys),
        None => frame.render_widget(Paragraph::new(help).style(Style::new().fg(Color::Gray)), keys),
    }
    if ui.help {
        draw_help(frame);
    }
}

fn draw_title(frame: &mut Frame, area: Rect, view: &RunView) {
    let mut spans = vec![
        Span::styled(" esper watch ", Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)),
        Span::raw(format!(" {}  ", view.dir.display())),
        Span::styled(
            view.status.label(),
            Style::new().fg(match view.status {
                super::view::RunStatus::Running { .. } => Color::Green,
                super::view::RunStatus::Ended => Color::Red,
                _ => Color::Gray,
            }),
        ),
    ];
    if let Some(last) = view.epochs.last() {
        let score = match last.val_perplexity {
            Some(p) => format!("val ppl {p:.2}"),
            None => format!("val acc {:.2}%", last.val_accuracy),
        };
        spans.push(Span::raw(format!("  epoch {}  {score}", last.epoch)));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_epochs(frame: &mut Frame, area: Rect, view: &RunView) {
    let text = view.is_text();
    let header = Row::new(["epoch", "train_loss", "val_loss", if text { "val_ppl" } else { "val_acc" }, "ms/step"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    // The latest epochs that fit.
    let fit = area.height.saturating_sub(3) as usize;
    let rows = view.epochs.iter().skip(view.epochs.len().saturating_sub(fit)).map(|r| {
        let score = match r.val_perplexity {
            Some(p) => format!("{p:.2}"),
            None => format!("{:.2}%", r.val_accuracy),
        };
        let step = if r.steps > 0 { format!("{:.1}", r.train_seconds * 1000.0 / r.steps as f64) } else { "-".into() };
        Row::new([r.epoch.to_string(), format!("{:.4}", r.train_loss), format!("{:.4}", r.val_loss), score, step])
    });
    let widths = [
        Constraint::Length(5),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(7),
    ];
    let table = Table::new(rows, widths).header(header).block(Block::bordered().title(" epochs "));
    frame.render_widget(table, area);
}

fn draw_chart(frame: &mut Frame, area: Rect, view: &RunView) {
    let text = view.is_text();
    type Curve = Vec<(f64, f64)>;
    let (train, val): (Curve, Curve) = if text {
        view.epochs.iter().map(|r| ((r.epoch as f64, r.train_loss), (r.epoch as f64, r.val_loss))).unzip()
    } else {
        view.epochs.iter().map(|r| ((r.epoch as f64, r.train_accuracy), (r.epoch as f64, r.val_accuracy))).unzip()
    };
    // At least one epoch wide, so the first epoch's point shows.
    let first = view.epochs.first().map_or(1.0, |r| r.epoch as f64);
    let last = view.epochs.last().map_or(1.0, |r| r.epoch as f64).max(first + 1.0);
    // The curves' range: to the nearest 10 points of accuracy (0.1 of loss), at least one step wide.
    let unit = if text { 0.1 } else { 10.0 };
    let values = train.iter().chain(&val).map(|p| p.1).filter(|v| v.is_finite());
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        let lo = (lo / unit).floor() * unit;
        (lo, ((hi / unit).ceil() * unit).max(lo + unit))
    } else if text {
        (0.0, 1.0)
    } else {
        (0.0, 100.0)
    };
    // A vertical mark at each epoch where a stage changed, a seed germinated or was pruned.
    let marks: Vec<Vec<(f64, f64)>> = view
        .epochs
        .iter()
        .filter(|r| r.events.iter().any(|e| e.is_headline()))
        .map(|r| vec![(r.epoch as f64, lo), (r.epoch as f64, hi)])
        .collect();
    let mut datasets: Vec<Dataset> = marks
        .iter()
        .map(|m| Dataset::default().marker(Marker::Braille).graph_type(GraphType::Line).style(Color::DarkGray).data(m))
        .collect();
    let (name_train, name_val) = if text { ("train loss", "val loss") } else { ("train acc", "val acc") };
    datasets.push(
        Dataset::default()
            .name(name_train)
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Color::Cyan)
            .data(&train),
    );
    datasets.push(
        Dataset::default()
            .name(name_val)
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Color::Yellow)
            .data(&val),
    );
    // The legend is the title: a box inside a chart this small would hide the curves.
    let title = Line::from(vec![
        Span::raw(" "),
        Span::styled(name_train, Style::new().fg(Color::Cyan)),
        Span::raw(", "),
        Span::styled(name_val, Style::new().fg(Color::Yellow)),
        Span::raw(", "),
        Span::styled("| events", Style::new().fg(Color::DarkGray)),
        Span::raw(" "),
    ]);
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(title))
        .x_axis(Axis::default().bounds([first, last]).labels([format!("{first}"), format!("{last}")]))
        .y_axis(
            Axis::default()
                .bounds([lo, hi])
                .labels([format!("{lo:.*}", usize::from(text)), format!("{hi:.*}", usize::from(text))]),
        )
        .legend_position(None);
    frame.render_widget(chart, area);
}

fn draw_slots(frame: &mut Frame, area: Rect, view: &RunView, ui: &UiState) {
    let header = Row::new(["slot", "stage", "blueprint", "alpha", "in stage", "contrib", "params"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = view.slots().iter().enumerate().map(|(i, s)| {
        let seed = s.seed.as_ref().filter(|_| s.stage != SeedStage::Dormant);
        let mut row = Row::new([
            Cell::from(s.slot.clone()),
            Cell::from(s.stage.to_string()).style(Style::new().fg(stage_color(s.stage)).add_modifier(Modifier::BOLD)),
            Cell::from(seed.map_or("-".into(), |d| d.blueprint.clone())),
            Cell::from(format!("{:.2}", s.alpha)),
            Cell::from(seed.map_or("-".into(), |d| d.epochs_in_stage.to_string())),
            Cell::from(s.contribution.map_or("-".into(), |c| format!("{c:+.2}"))),
            Cell::from(seed.map_or("-".into(), |d| d.parameters.to_string())),
        ]);
        if ui.selected == Some(i) {
            row = row.style(Style::new().add_modifier(Modifier::REVERSED));
        }
        row
    });
    let widths = [
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Min(12),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(8),
    ];
    let table = Table::new(rows, widths).header(header).block(Block::bordered().title(" slots "));
    frame.render_widget(table, area);
}

fn level_style(level: Level) -> Style {
    match level {
        Level::Info => Style::new(),
        Level::Warn => Style::new().fg(Color::Yellow),
        Level::Error => Style::new().fg(Color::Red),
    }
}

fn draw_log(frame: &mut Frame, area: Rect, view: &RunView) {
    let fit = area.height.saturating_sub(2) as usize;
    // A passed gate shows as the stage change that follows it.
    let shown: Vec<_> = view
        .log
        .iter()
        .filter(|e| !matches!(e.what, Logged::Lifecycle(LifecycleEvent::GateEvaluated { passed: true, .. })))
        .collect();
    let lines: Vec<Line> = shown
        .iter()
        .skip(shown.len().saturating_sub(fit))
        .map(|e| Line::from(vec![Span::raw(format!("{:>3} ", e.epoch)), Span::styled(e.text(), level_style(e.level))]))
        .collect();
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" events (epoch) ")), area);
}

fn draw_slot_history(frame: &mut Frame, area: Rect, view: &RunView, slot: &str) {
    let stages: Vec<Span> = view
        .stage_history(slot)
        .into_iter()
        .flat_map(|(stage, a, b)| {
            let epochs = if a == b { format!(" {a}") } else { format!(" {a}-{b}") };
            [
                Span::styled(stage.to_string(), Style::new().fg(stage_color(stage)).add_modifier(Modifier::BOLD)),
                Span::raw(format!("{epochs}  ")),
            ]
        })
        .collect();
    let mut lines = vec![Line::from(stages)];
    let events: Vec<_> = view.log.iter().filter(|e| e.slot() == Some(slot)).collect();
    let fit = area.height.saturating_sub(3) as usize;
    lines.extend(events.iter().skip(events.len().saturating_sub(fit)).map(|e| {
        Line::from(vec![Span::raw(format!("{:>3} ", e.epoch)), Span::styled(e.text(), level_style(e.level))])
    }));
    let block = Block::bordered().title(format!(" {slot}: stages by epoch, events (esc: all events) "));
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_help(frame: &mut Frame) {
    let area = frame.area();
    let w = area.width.min(60);
    let h = area.height.min(12);
    let popup = Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h };
    let text = vec![
        Line::from("q          quit (the run goes on)"),
        Line::from("↑ / ↓      select a slot: its stages and events"),
        Line::from("esc        back to the event log"),
        Line::from("?          this help"),
        Line::from(""),
        Line::from("Stages: DORMANT, GERMINATED, TRAINING, BLENDING,"),
        Line::from("HOLDING, FOSSILIZED; PRUNED and EMBARGOED on failure."),
        Line::from("Curves: accuracy % (loss for text runs) by epoch."),
    ];
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(text).block(Block::bordered().title(" help ")), popup);
}

/// The text of a rendered buffer, one line per row, trailing spaces cut.
#[cfg(test)]
pub fn buffer_text(buffer: &ratatui::buffer::Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in area.y..area.y + area.height {
        let mut line = String::new();
        for x in area.x..area.x + area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::view::{Follower, RunStatus};
    use ratatui::{backend::TestBackend, Terminal};
    use std::path::{Path, PathBuf};

    /// The recorded run of `tests/data/watch-run` (an `esper run` of 4 epochs: a `norm`
    /// seed in r0c1 from epoch 1, the misbehaving `inplace-input` seed in r1c1 from
    /// epoch 2, pruned for writing into its input), shown under a short name.
    fn recorded() -> RunView {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/watch-run");
        let mut follower = Follower::new(&dir);
        follower.poll().unwrap();
        RunView { dir: PathBuf::from("runs/demo"), ..follower.view() }
    }

    fn render(view: &RunView, ui: &UiState, width: u16, height: u16) -> Terminal<TestBackend> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, view, ui)).unwrap();
        terminal
    }

    /// The row of the rendered text that starts (after the border) with `start`.
    fn row<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.trim_start_matches('│').starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}`:\n{text}"))
    }

    #[test]
    fn the_dashboard_of_a_recorded_run_shows_the_slot_grid_its_stages_and_a_prune_reason() {
        let view = recorded();
        assert_eq!((view.status, view.epochs.len()), (RunStatus::Finished, 4));
        let terminal = render(&view, &UiState::default(), 80, 24);
        let text = buffer_text(terminal.backend().buffer());
        assert!(text.starts_with(" esper watch  runs/demo  finished  epoch 4  val acc "), "{text}");
        // The slot grid: each slot with its stage, blueprint and alpha.
        let header = row(&text, "slot");
        for column in ["stage", "blueprint", "alpha", "in stage", "contrib", "params"] {
            assert!(header.contains(column), "{header}");
        }
        let (r0, r1) = (row(&text, "r0c1"), row(&text, "r1c1"));
        let last = view.slots();
        assert!(r0.contains(&format!("{} ", last[0].stage)) && r0.contains("norm"), "{r0}");
        assert!(r1.contains("PRUNED") || r1.contains("EMBARGOED"), "{r1}");
        assert!(r1.contains("inplace-input"), "{r1}");
        // Each stage cell in its stage's colour: the recorded run ends HOLDING and EMBARGOED.
        let buffer = terminal.backend().buffer();
        for (line, stage, color) in [(r0, "HOLDING", Color::Magenta), (r1, "EMBARGOED", Color::Red)] {
            let y = text.lines().position(|l| l == line).unwrap() as u16;
            let x = line[..line.find(stage).unwrap_or_else(|| panic!("{stage}: {line}"))].chars().count() as u16;
            assert_eq!((buffer[(x, y)].fg, buffer[(x - 1, y)].fg), (color, Color::Reset), "{stage} in {line}");
        }
        // The epoch table's rows, and the event log with the prune and its reason.
        for r in &view.epochs {
            assert!(text.lines().any(|l| l.trim_start_matches('│').trim_start().starts_with(&format!("{} ", r.epoch))));
        }
        assert!(text.contains("r1c1: pruned (input_written"), "{text}");
        assert!(text.contains("q quit") && text.contains("? help"), "{text}");
    }

    #[test]
    fn arrows_select_a_slot_whose_history_replaces_the_log_and_help_opens() {
        let view = recorded();
        let mut ui = UiState::default();
        ui.select(1, view.slots().len());
        ui.select(1, view.slots().len());
        assert_eq!(ui.selected, Some(1));
        let text = buffer_text(render(&view, &ui, 80, 24).backend().buffer());
        assert!(text.contains(" r1c1: stages by epoch, events "), "{text}");
        let stages: Vec<String> = view.stage_history("r1c1").iter().map(|(s, _, _)| s.to_string()).collect();
        assert!(stages.contains(&"PRUNED".to_string()) || stages.contains(&"EMBARGOED".to_string()), "{stages:?}");
        for s in &stages {
            assert!(text.contains(s.as_str()), "{s}: {text}");
        }
        assert!(text.contains("r1c1: pruned (input_written") && !text.contains("r0c1: germinated"), "{text}");
        ui.select(1, 2);
        assert_eq!(ui.selected, Some(0), "wraps around");
        ui.help = true;
        let text = buffer_text(render(&view, &ui, 80, 24).backend().buffer());
        assert!(text.contains(" help ") && text.contains("quit (the run goes on)"), "{text}");
    }

    #[test]
    fn a_run_not_started_or_one_epoch_in_draws_and_so_does_a_small_terminal() {
        let view =
            RunView { dir: "runs/x".into(), status: RunStatus::Waiting, epochs: vec![], log: vec![], problem: None };
        let text = buffer_text(render(&view, &UiState::default(), 80, 24).backend().buffer());
        assert!(text.contains("waiting for the run"), "{text}");
        // One epoch done: its curves' points show.
        let full = recorded();
        let one = RunView { epochs: full.epochs[..1].to_vec(), ..full };
        let text = buffer_text(render(&one, &UiState::default(), 80, 24).backend().buffer());
        assert!(text.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)), "no curve drawn:\n{text}");
        // A problem reading the files takes the footer.
        let bad = RunView { problem: Some("runs/x/report.json is not a run report: EOF".into()), ..view.clone() };
        let text = buffer_text(render(&bad, &UiState::default(), 80, 24).backend().buffer());
        assert_eq!(text.lines().last(), Some(" runs/x/report.json is not a run report: EOF"), "{text}");
        // A small terminal still draws.
        render(&view, &UiState::default(), 20, 5);
        render(&recorded(), &UiState { selected: Some(1), help: true }, 30, 8);
    }

    /// The book's capture (docs/src/guide/watching.md) is this render of the recorded
    /// run; `ESPER_BLESS=1` writes it there.
    #[test]
    fn docs_capture_is_the_render_of_the_recorded_run() {
        let text = buffer_text(render(&recorded(), &UiState::default(), 80, 24).backend().buffer());
        let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src/guide/watching.md");
        let doc = std::fs::read_to_string(&page).unwrap();
        let marker = "do not edit by hand -->\n```text\n";
        let start = doc.find(marker).expect("the capture's marker") + marker.len();
        let end = start + doc[start..].find("```\n").expect("the capture's end");
        if std::env::var_os("ESPER_BLESS").is_some() {
            std::fs::write(&page, format!("{}{text}{}", &doc[..start], &doc[end..])).unwrap();
            return;
        }
        assert_eq!(doc[start..end], text, "the capture in {} is out of date: run with ESPER_BLESS=1", page.display());
    }
}
