//! Hosts made of network namespaces, for tests of a mesh across machines: one namespace per
//! host, each joined to a bridge by a veth pair, with an address of its own on a /24 that the
//! test makes up (10.213.N.0, N from the process id), the bridge holding `.1`. Everything is
//! deleted on drop, even when the test fails. Needs root and iproute2 (`ip`).

use std::process::{Command, Stdio};

pub(crate) struct Hosts {
    tag: String,
    subnet: u8,
    count: usize,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run ip (iproute2)");
    assert!(status.success(), "ip {args:?} failed");
}

impl Hosts {
    /// `count` hosts on one bridge.
    pub(crate) fn create(count: usize) -> Hosts {
        let pid = std::process::id();
        let hosts = Hosts {
            tag: format!("{}", pid % 100_000),
            subnet: (pid % 200 + 20) as u8,
            count,
        };
        let bridge = hosts.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", hosts.bridge_ip()),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..count {
            let (ns, outside, inside) = (
                hosts.namespace(i),
                hosts.veth(i),
                format!("wp{}{i}", hosts.tag),
            );
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            ip(&["link", "set", &inside, "netns", &ns]);
            ip(&["link", "set", &outside, "master", &bridge]);
            ip(&["link", "set", &outside, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", hosts.ip(i)),
                "dev",
                &inside,
            ]);
            ip(&["-n", &ns, "link", "set", &inside, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    fn bridge(&self) -> String {
        format!("wb{}", self.tag)
    }

    fn veth(&self, i: usize) -> String {
        format!("wv{}{i}", self.tag)
    }

    pub(crate) fn namespace(&self, i: usize) -> String {
        format!("wharf-test-{}-{i}", self.tag)
    }

    /// Host `i`'s address.
    pub(crate) fn ip(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.subnet, i + 2)
    }

    /// The bridge's address: where a server shared by every host (etcd) listens.
    pub(crate) fn bridge_ip(&self) -> String {
        format!("10.213.{}.1", self.subnet)
    }

    /// `PROGRAM` run on host `i`.
    pub(crate) fn command(&self, i: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace(i), program]);
        command
    }

    /// Takes host `i`'s link down: it is cut off from the others.
    pub(crate) fn cut(&self, i: usize) {
        ip(&["link", "set", &self.veth(i), "down"]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..self.count {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(i)])
                .status();
            let _ = Command::new("ip")
                .args(["link", "del", &self.veth(i)])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .status();
    }
}
