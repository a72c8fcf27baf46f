//! `wharf top` under a real terminal: tmux runs it in a detached session of a known size, the
//! test reads the screen with `capture-pane` and types with `send-keys`. Needs tmux
//! (`bash tests/ui/run.sh` installs it and runs these).

use std::process::{Command, Output};

use crate::support::*;

/// A tmux server of the test's own (its own socket), killed with every session on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("wharf-top-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        assert!(self.run(&["send-keys", "-t", "top", keys]).status.success());
    }

    fn running(&self) -> bool {
        self.run(&["has-session", "-t", "top"]).status.success()
    }

    /// Waits until the screen shows what `condition` looks for; its last state in the panic.
    fn shows(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually(what, || {
                last = self.screen();
                condition(&last)
            })
        }));
        if found.is_err() {
            panic!("timed out waiting for: {what}; the screen:\n{last}");
        }
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn row(screen: &str, name: &str) -> usize {
    screen
        .lines()
        .position(|l| l.contains(&format!("│{name} ")))
        .unwrap_or_else(|| panic!("no row {name}:\n{screen}"))
}

#[test]
#[ignore = "needs tmux: bash tests/ui/run.sh"]
fn top_renders_the_mesh_live_and_reacts_to_keys() {
    let dir = tempfile::tempdir().unwrap();
    let registry = RegistryProcess::start(dir.path(), &[]);
    // zulu has traffic through a gateway and two instances; alpha one and none.
    let zulu = [Backend::start("zulu-1"), Backend::start("zulu-2")];
    for backend in &zulu {
        register(&registry, "zulu", backend);
    }
    let alpha = Backend::start("alpha-1");
    register(&registry, "alpha", &alpha);
    let proxy = ProxyProcess::start(&registry.url(), &[]);
    eventually("zulu through the gateway", || {
        proxy.get("zulu", "/").status == 200
    });
    for _ in 0..20 {
        let answer = proxy.get("zulu", "/");
        assert_eq!(answer.status, 200);
    }

    let tmux = Tmux::new();
    let command = format!("{WHARF} top --registry {}", registry.url());
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "140",
        "-y",
        "30",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");

    // The services, sorted by name; zulu's traffic shows once the gateway has reported.
    let screen = tmux.shows("both services, zulu with traffic", |s| {
        s.contains("│alpha ")
            && s.lines()
                .any(|l| l.contains("│zulu ") && l.contains("100.00%"))
    });
    assert!(row(&screen, "alpha") < row(&screen, "zulu"), "{screen}");
    assert!(screen.contains("SERVICE ▲"), "{screen}");

    // A key: sort by RPS, busiest first.
    tmux.keys("3");
    let screen = tmux.shows("sorted by RPS", |s| s.contains("RPS ▼"));
    assert!(row(&screen, "zulu") < row(&screen, "alpha"), "{screen}");
    // What it looked like, kept beside the dashboard's screenshots when asked for.
    if let Some(artifacts) = std::env::var_os("ARTIFACTS") {
        std::fs::create_dir_all(&artifacts).unwrap();
        std::fs::write(std::path::Path::new(&artifacts).join("top.txt"), &screen).unwrap();
    }

    // Live: a service registered now appears without a key.
    let mike = Backend::start("mike-1");
    register(&registry, "mike", &mike);
    tmux.shows("mike, registered while top runs", |s| s.contains("│mike "));

    // Enter on the selected row (zulu, on top): its instances.
    tmux.keys("Enter");
    let screen = tmux.shows("zulu's instances", |s| {
        s.contains("zulu: instances") && s.contains("zulu-1") && s.contains("zulu-2")
    });
    assert!(!screen.contains("alpha"), "{screen}");
    tmux.keys("e");
    tmux.shows("the edges", |s| {
        s.lines()
            .any(|l| l.contains("gateway") && l.contains("zulu") && l.contains("plaintext"))
    });

    // q leaves it, and the terminal with it.
    tmux.keys("q");
    eventually("wharf top exited", || !tmux.running());
}
