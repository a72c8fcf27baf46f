//! `wharf top`: the mesh's golden metrics live in the terminal, the same figures as the
//! dashboard (`/v1/wharf/stats`, followed as a blocking query, so the table changes the
//! moment the registry's figures do). [`view`] is what is drawn and how keys move it; this
//! module owns the terminal, the keyboard and the registry.

mod view;

use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyEventKind};
use tokio::sync::mpsc;
use wharf_client::{Blocking, Client};

use crate::cli::TopArgs;
use crate::stats_answer::StatsAnswer;

/// At most this many redraws a second from updates (every proxy report moves the index).
const MIN_BETWEEN_UPDATES: Duration = Duration::from_millis(500);

pub(crate) async fn run(args: TopArgs) -> anyhow::Result<()> {
    let client = crate::client_cmds::client(&args.registry)?;
    let mut app = view::App::new(client.base().to_owned(), args.service);
    let (updates_tx, mut updates) = mpsc::channel(2);
    let follower = tokio::spawn(follow(client, updates_tx));
    let (keys_tx, mut keys) = mpsc::channel(16);
    // crossterm reads the keyboard blocking: on a thread of its own, until the app is gone.
    std::thread::spawn(move || {
        while !keys_tx.is_closed() {
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => match event::read() {
                    Ok(event) => {
                        if keys_tx.blocking_send(event).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    let mut terminal = ratatui::try_init()?;
    let drawn: anyhow::Result<()> = async {
        loop {
            terminal.draw(|frame| app.draw(frame))?;
            tokio::select! {
                Some(update) = updates.recv() => app.update(update),
                Some(event) = keys.recv() => {
                    if let Event::Key(key) = event
                        && key.kind == KeyEventKind::Press
                    {
                        app.key(key);
                    }
                }
                // The "updated N s ago" ticks on.
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if app.quit {
                return Ok(());
            }
        }
    }
    .await;
    ratatui::try_restore()?;
    follower.abort();
    drawn
}

/// Follows `/v1/wharf/stats`; an error is passed on and the follow starts over a second later.
async fn follow(client: Client, updates: mpsc::Sender<Result<StatsAnswer, String>>) {
    let mut index = 0;
    loop {
        let started = tokio::time::Instant::now();
        let blocking = (index > 0).then_some(Blocking {
            index,
            wait: Duration::from_secs(30),
        });
        let answer = client
            .read::<StatsAnswer>("/v1/wharf/stats", blocking)
            .await;
        let failed = answer.is_err();
        let sent = match answer {
            Ok((stats, next)) => {
                index = next;
                updates.send(Ok(stats)).await
            }
            Err(e) => {
                index = 0;
                updates.send(Err(e.to_string())).await
            }
        };
        if sent.is_err() {
            return;
        }
        let pause = if failed {
            Duration::from_secs(1)
        } else {
            MIN_BETWEEN_UPDATES
        };
        tokio::time::sleep_until(started + pause).await;
    }
}
