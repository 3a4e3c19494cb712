//! A network namespace of the test's own, joined to this one by two veth pairs: one carries a
//! process's traffic to etcd, the other the test's traffic to the process. Cutting the first
//! partitions the process from etcd while the test can still ask it questions. Removed when
//! dropped.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use super::tools::require;

pub struct Netns {
    name: String,
    /// This side of the link to etcd: set down to cut the link.
    etcd_link: String,
    /// The address etcd listens on for the namespace (this side of the etcd link).
    pub etcd_side: IpAddr,
    /// The namespace's address on the test's link: where the test reaches its process.
    pub inside: IpAddr,
}

fn ip(args: &[&str]) {
    let output = Command::new(require("ip", "iproute2"))
        .args(args)
        .output()
        .expect("ip runs");
    assert!(
        output.status.success(),
        "`ip {}` failed: {}. This test makes a network namespace and veth pairs: it needs root \
         (or CAP_NET_ADMIN) and iproute2 (`apt-get install -y iproute2`)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

impl Netns {
    pub fn create() -> Self {
        // Names and subnets of this test process's own, so that runs side by side do not meet.
        let tag = std::process::id() % 200;
        let name = format!("sextant-test-{}", std::process::id());
        let (etcd_link, etcd_peer) = (format!("sxe{tag}"), format!("sxe{tag}p"));
        let (client_link, client_peer) = (format!("sxc{tag}"), format!("sxc{tag}p"));
        let subnet = |third: u8, host: u8| Ipv4Addr::new(10, 231, 4 * (tag as u8 % 60) + third, host);
        let netns = Self {
            name: name.clone(),
            etcd_link: etcd_link.clone(),
            etcd_side: subnet(0, 1).into(),
            inside: subnet(1, 2).into(),
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        for (link, peer, third) in [(&etcd_link, &etcd_peer, 0), (&client_link, &client_peer, 1)] {
            ip(&["link", "add", link, "type", "veth", "peer", "name", peer]);
            ip(&["link", "set", peer, "netns", &name]);
            ip(&["addr", "add", &format!("{}/30", subnet(third, 1)), "dev", link]);
            ip(&["link", "set", link, "up"]);
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{}/30", subnet(third, 2)),
                "dev",
                peer,
            ]);
            ip(&["-n", &name, "link", "set", peer, "up"]);
        }
        netns
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new(require("ip", "iproute2"));
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Cuts the namespace off from etcd.
    pub fn cut(&self) {
        ip(&["link", "set", &self.etcd_link, "down"]);
    }

    /// Joins it again.
    pub fn heal(&self) {
        ip(&["link", "set", &self.etcd_link, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth ends in it, and so their pairs here.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
