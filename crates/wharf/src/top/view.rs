//! What `wharf top` shows and how keys move it: the services, one service's instances, or the
//! edges, as a table sorted by any column; kept apart from the terminal so that it is tested
//! on ratatui's in-memory backend.

use std::time::Instant;

use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState};

use crate::stats_answer::{StatsAnswer, Window, number, percent};

/// Which table is on screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Screen {
    Services,
    Instances(String),
    Edges,
}

/// How a cell sorts.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key {
    Text(String),
    /// No figure sorts last whichever the direction.
    Number(Option<f64>),
}

struct Column {
    title: &'static str,
    width: u16,
}

const fn column(title: &'static str, width: u16) -> Column {
    Column { title, width }
}

const SERVICES: &[Column] = &[
    column("SERVICE", 24),
    column("HEALTH", 9),
    column("RPS", 9),
    column("SUCCESS", 9),
    column("P50 MS", 8),
    column("P99 MS", 8),
    column("L", 8),
    column("MAX W/L", 8),
    column("F", 8),
];

const INSTANCES: &[Column] = &[
    column("INSTANCE", 24),
    column("ADDRESS", 22),
    column("W (RPS)", 9),
    column("F", 8),
    column("IN FLIGHT", 9),
    column("P99 MS", 8),
];

const EDGES: &[Column] = &[
    column("SOURCE", 20),
    column("DESTINATION", 20),
    column("RPS", 9),
    column("SUCCESS", 9),
    column("P99 MS", 8),
    column("TRANSPORT", 10),
    column("INTENTION", 11),
];

/// One table row: what it shows, how it sorts, its colour.
struct TableLine {
    cells: Vec<String>,
    keys: Vec<Key>,
    colour: Color,
}

fn colour_of(window: &Window) -> Color {
    match window.success() {
        None => Color::Reset,
        Some(s) if s >= 0.99 => Color::Green,
        Some(s) if s >= 0.95 => Color::Yellow,
        Some(_) => Color::Red,
    }
}

fn ms(x: Option<f64>) -> String {
    number(x, 1)
}

pub(crate) struct App {
    pub(crate) stats: Option<StatsAnswer>,
    pub(crate) screen: Screen,
    /// The column sorted on, and whether the largest comes first.
    pub(crate) sort: usize,
    pub(crate) descending: bool,
    table: TableState,
    /// The last update's time, or the error that stopped the last one.
    pub(crate) updated: Option<Instant>,
    pub(crate) error: Option<String>,
    pub(crate) registry: String,
    pub(crate) quit: bool,
}

impl App {
    pub(crate) fn new(registry: String, service: Option<String>) -> App {
        let mut app = App {
            stats: None,
            screen: Screen::Services,
            sort: 0,
            descending: false,
            table: TableState::default(),
            updated: None,
            error: None,
            registry,
            quit: false,
        };
        if let Some(service) = service {
            app.show(Screen::Instances(service.to_ascii_lowercase()));
        }
        app
    }

    pub(crate) fn update(&mut self, answer: Result<StatsAnswer, String>) {
        match answer {
            Ok(stats) => {
                self.stats = Some(stats);
                self.updated = Some(Instant::now());
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn columns(&self) -> &'static [Column] {
        match self.screen {
            Screen::Services => SERVICES,
            Screen::Instances(_) => INSTANCES,
            Screen::Edges => EDGES,
        }
    }

    fn show(&mut self, screen: Screen) {
        self.screen = screen;
        self.sort = 0;
        self.descending = false;
        self.table.select(Some(0));
    }

    fn lines(&self) -> Vec<TableLine> {
        let Some(stats) = &self.stats else {
            return Vec::new();
        };
        let mut lines: Vec<TableLine> = match &self.screen {
            Screen::Services => stats
                .services
                .iter()
                .map(|s| {
                    let m = &s.minute;
                    TableLine {
                        cells: vec![
                            s.name.clone(),
                            format!("{}/{}", s.health.passing, s.health.instances()),
                            number(Some(m.rps), 1),
                            percent(m.success()),
                            ms(m.latency_ms.p50),
                            ms(m.latency_ms.p99),
                            number(s.models.mean_load, 1),
                            number(s.models.imbalance, 2),
                            percent(s.models.mean_failure_rate),
                        ],
                        keys: vec![
                            Key::Text(s.name.clone()),
                            // Fewest passing first when ascending: the trouble on top.
                            Key::Number(Some(
                                s.health.passing as f64 - s.health.instances() as f64 * 1e-6,
                            )),
                            Key::Number(Some(m.rps)),
                            Key::Number(m.success()),
                            Key::Number(m.latency_ms.p50),
                            Key::Number(m.latency_ms.p99),
                            Key::Number(s.models.mean_load),
                            Key::Number(s.models.imbalance),
                            Key::Number(s.models.mean_failure_rate),
                        ],
                        colour: if s.health.critical > 0 {
                            Color::Red
                        } else {
                            colour_of(m)
                        },
                    }
                })
                .collect(),
            Screen::Instances(name) => stats
                .services
                .iter()
                .filter(|s| &s.name == name)
                .flat_map(|s| &s.instances)
                .map(|i| {
                    let m = &i.minute;
                    TableLine {
                        cells: vec![
                            i.id.clone(),
                            i.address.clone(),
                            number(Some(m.rps), 1),
                            percent(Some(i.failure_rate)),
                            i.in_flight.to_string(),
                            ms(m.latency_ms.p99),
                        ],
                        keys: vec![
                            Key::Text(i.id.clone()),
                            Key::Text(i.address.clone()),
                            Key::Number(Some(m.rps)),
                            Key::Number(Some(i.failure_rate)),
                            Key::Number(Some(i.in_flight as f64)),
                            Key::Number(m.latency_ms.p99),
                        ],
                        colour: colour_of(m),
                    }
                })
                .collect(),
            Screen::Edges => stats
                .edges
                .iter()
                .map(|e| {
                    let m = &e.minute;
                    let transport = if e.mtls { "mTLS" } else { "plaintext" };
                    TableLine {
                        cells: vec![
                            e.source.clone(),
                            e.destination.clone(),
                            number(Some(m.rps), 1),
                            percent(m.success()),
                            ms(m.latency_ms.p99),
                            transport.to_owned(),
                            e.intention.clone(),
                        ],
                        keys: vec![
                            Key::Text(e.source.clone()),
                            Key::Text(e.destination.clone()),
                            Key::Number(Some(m.rps)),
                            Key::Number(m.success()),
                            Key::Number(m.latency_ms.p99),
                            Key::Text(transport.to_owned()),
                            Key::Text(e.intention.clone()),
                        ],
                        colour: if e.mtls { colour_of(m) } else { Color::Red },
                    }
                })
                .collect(),
        };
        let (sort, descending) = (self.sort, self.descending);
        lines.sort_by(|a, b| {
            let (x, y) = (&a.keys[sort], &b.keys[sort]);
            let order = match (x, y) {
                (Key::Number(None), Key::Number(Some(_))) => return std::cmp::Ordering::Greater,
                (Key::Number(Some(_)), Key::Number(None)) => return std::cmp::Ordering::Less,
                _ => x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal),
            };
            let order = if descending { order.reverse() } else { order };
            order.then_with(|| a.cells[0].cmp(&b.cells[0]))
        });
        lines
    }

    /// The service under the cursor, on the services screen.
    fn selected_service(&self) -> Option<String> {
        if self.screen != Screen::Services {
            return None;
        }
        let lines = self.lines();
        lines
            .get(self.table.selected().unwrap_or(0))
            .map(|l| l.cells[0].clone())
    }

    pub(crate) fn key(&mut self, key: KeyEvent) {
        let columns = self.columns().len();
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.quit = true;
            }
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Char('b') => {
                if self.screen == Screen::Services {
                    if key.code == KeyCode::Esc {
                        self.quit = true;
                    }
                } else {
                    self.show(Screen::Services);
                }
            }
            KeyCode::Enter => {
                if let Some(service) = self.selected_service() {
                    self.show(Screen::Instances(service));
                }
            }
            KeyCode::Char('e') => self.show(Screen::Edges),
            KeyCode::Char('i') => {
                if let Some(service) = self.selected_service() {
                    self.show(Screen::Instances(service));
                }
            }
            KeyCode::Char('s') => self.show(Screen::Services),
            KeyCode::Right | KeyCode::Char('>') | KeyCode::Tab => {
                self.sort = (self.sort + 1) % columns;
            }
            KeyCode::Left | KeyCode::Char('<') | KeyCode::BackTab => {
                self.sort = (self.sort + columns - 1) % columns;
            }
            KeyCode::Char('r') => self.descending = !self.descending,
            KeyCode::Char(c @ '1'..='9') => {
                let n = c as usize - '1' as usize;
                if n < columns {
                    if self.sort == n {
                        self.descending = !self.descending;
                    } else {
                        self.sort = n;
                        // Figures read best largest first; names from A.
                        self.descending = n > 0;
                    }
                }
            }
            KeyCode::Down | KeyCode::Char('j') => self.table.select_next(),
            KeyCode::Up | KeyCode::Char('k') => self.table.select_previous(),
            KeyCode::Home | KeyCode::Char('g') => self.table.select_first(),
            KeyCode::End | KeyCode::Char('G') => self.table.select_last(),
            _ => {}
        }
    }

    pub(crate) fn draw(&mut self, frame: &mut Frame) {
        let [body, footer] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
        let lines = self.lines();
        let columns = self.columns();
        let header = Row::new(columns.iter().enumerate().map(|(i, c)| {
            let mark = match (i == self.sort, self.descending) {
                (true, true) => " ▼",
                (true, false) => " ▲",
                (false, _) => "",
            };
            Cell::from(format!("{}{mark}", c.title))
        }))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED));
        let count = lines.len();
        let rows = lines.into_iter().map(|l| {
            Row::new(l.cells.into_iter().map(Cell::from)).style(Style::new().fg(l.colour))
        });
        let widths = columns.iter().map(|c| Constraint::Length(c.width));
        let title = match &self.screen {
            Screen::Services => " services ".to_owned(),
            Screen::Instances(name) => format!(" {name}: instances "),
            Screen::Edges => " edges (caller → callee) ".to_owned(),
        };
        let selected = self.table.selected().unwrap_or(0);
        self.table
            .select((count > 0).then(|| selected.min(count - 1)));
        let table = Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(title))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        frame.render_stateful_widget(table, body, &mut self.table);

        let state = match (&self.error, &self.stats, self.updated) {
            (Some(e), _, _) => Span::styled(format!("error: {e}"), Style::new().fg(Color::Red)),
            (None, Some(stats), Some(at)) => Span::raw(format!(
                "{} services, {} proxies reporting, updated {:.0}s ago",
                stats.services.len(),
                stats.proxies,
                at.elapsed().as_secs_f64()
            )),
            _ => Span::raw("connecting…"),
        };
        let help = Span::styled(
            "  ←/→ sort  r reverse  ↵ instances  e edges  s services  q quit",
            Style::new().add_modifier(Modifier::DIM),
        );
        frame.render_widget(
            Paragraph::new(Line::from(vec![
                Span::raw(format!("wharf top · {} · ", self.registry)),
                state,
                help,
            ])),
            footer,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats_answer::{Health, Instance, Models, Service};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn window(rps: f64, success_rate: f64) -> Window {
        Window {
            requests: 100,
            rps,
            success_rate,
            ..Window::default()
        }
    }

    fn stats() -> StatsAnswer {
        let service = |name: &str, rps: f64, instances: &[&str]| Service {
            name: name.into(),
            minute: window(rps, 0.9),
            models: Models::default(),
            instances: instances
                .iter()
                .map(|id| Instance {
                    id: (*id).into(),
                    address: "127.0.0.1:1".into(),
                    in_flight: 0,
                    failure_rate: 0.1,
                    minute: window(rps / instances.len() as f64, 0.9),
                })
                .collect(),
            health: Health {
                passing: instances.len() as u64,
                ..Health::default()
            },
            routes: Vec::new(),
            subsets: Vec::new(),
            desired: None,
        };
        StatsAnswer {
            services: vec![
                service("alpha", 5.0, &["alpha-1"]),
                service("beta", 50.0, &["beta-1", "beta-2"]),
            ],
            edges: Vec::new(),
            proxies: 1,
        }
    }

    fn screen(app: &mut App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(110, 12)).unwrap();
        terminal.draw(|frame| app.draw(frame)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
                    + "\n"
            })
            .collect()
    }

    fn press(app: &mut App, code: KeyCode) {
        app.key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    fn row_of(text: &str, name: &str) -> usize {
        text.lines().position(|l| l.contains(name)).unwrap()
    }

    #[test]
    fn sorting_by_a_key_reorders_the_services() {
        let mut app = App::new("http://r".into(), None);
        app.update(Ok(stats()));
        let text = screen(&mut app);
        assert!(row_of(&text, "alpha") < row_of(&text, "beta"), "{text}");
        assert!(text.contains("SERVICE ▲"));
        press(&mut app, KeyCode::Char('3')); // RPS, busiest first
        let text = screen(&mut app);
        assert!(text.contains("RPS ▼"), "{text}");
        assert!(row_of(&text, "beta") < row_of(&text, "alpha"), "{text}");
        press(&mut app, KeyCode::Char('r'));
        let text = screen(&mut app);
        assert!(row_of(&text, "alpha") < row_of(&text, "beta"), "{text}");
    }

    #[test]
    fn enter_opens_the_selected_service_s_instances_and_esc_goes_back() {
        let mut app = App::new("http://r".into(), None);
        app.update(Ok(stats()));
        screen(&mut app);
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.screen, Screen::Instances("beta".into()));
        let text = screen(&mut app);
        assert!(text.contains("beta-1") && text.contains("beta-2"), "{text}");
        assert!(!text.contains("alpha-1"));
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.screen, Screen::Services);
        assert!(!app.quit);
        press(&mut app, KeyCode::Char('q'));
        assert!(app.quit);
    }

    #[test]
    fn an_error_is_shown_and_the_last_figures_kept() {
        let mut app = App::new("http://r".into(), None);
        app.update(Ok(stats()));
        app.update(Err("connection refused".into()));
        let text = screen(&mut app);
        assert!(text.contains("error: connection refused"), "{text}");
        assert!(text.contains("alpha"));
    }
}
