//! A network namespace standing in for a pod, wired to the host the way CNI plugins do it. Needs
//! root (CAP_NET_ADMIN) and iproute2; `Netns::new` says why not and returns `None` without them.

use std::net::Ipv4Addr;
use std::process::Command;

/// A network namespace and the host devices made for it, all removed on drop.
pub struct Netns {
    pub name: String,
    host_links: Vec<String>,
}

impl Netns {
    pub fn new(tag: &str) -> Option<Self> {
        let name = format!("kess-{tag}-{}", std::process::id());
        match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(out) if out.status.success() => {
                let netns = Self {
                    name,
                    host_links: Vec::new(),
                };
                netns.ip_inside("link set lo up");
                Some(netns)
            }
            Ok(out) => {
                eprintln!(
                    "cannot make a network namespace (needs CAP_NET_ADMIN): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                None
            }
            Err(e) => {
                eprintln!("no iproute2 (`ip`): {e}");
                None
            }
        }
    }

    /// `/var/run/netns/<name>`, for `setns`.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs `ip <args>` on the host; panics with ip's message if it fails.
    pub fn ip(&self, args: &str) {
        run_ip(args);
    }

    /// Runs `ip <args>` inside the namespace.
    pub fn ip_inside(&self, args: &str) {
        run_ip(&format!("-n {} {args}", self.name));
    }

    /// Names a host device to delete on drop.
    pub fn host_link(&mut self, name: &str) -> String {
        self.host_links.push(name.to_string());
        name.to_string()
    }

    /// Calico's shape: the namespace's end of a veth pair at `10.213.<subnet>.2/32`, reached
    /// from the host by a /32 route through the host's end, which holds `.1/32`. Returns (host
    /// address, pod address).
    pub fn veth_to_host(&mut self, subnet: u8) -> (Ipv4Addr, Ipv4Addr) {
        let n = std::process::id() % 100_000;
        let host_end = self.host_link(&format!("kc{n}s{subnet}"));
        let pod_end = format!("kq{n}s{subnet}");
        let (host, pod) = (
            Ipv4Addr::new(10, 213, subnet, 1),
            Ipv4Addr::new(10, 213, subnet, 2),
        );
        self.ip(&format!(
            "link add {host_end} type veth peer name {pod_end} netns {}",
            self.name
        ));
        self.ip(&format!("addr add {host}/32 dev {host_end}"));
        self.ip(&format!("link set {host_end} up"));
        self.ip(&format!("route add {pod}/32 dev {host_end}"));
        self.ip_inside(&format!("addr add {pod}/32 dev {pod_end}"));
        self.ip_inside(&format!("link set {pod_end} up"));
        self.ip_inside(&format!("route add {host}/32 dev {pod_end}"));
        (host, pod)
    }

    /// flannel's shape: a host bridge holding `10.213.<subnet>.1/24`, with the namespace's end
    /// of a veth pair at `.2` as a port. Returns (host address, pod address).
    pub fn bridge_to_host(&mut self, subnet: u8) -> (Ipv4Addr, Ipv4Addr) {
        let n = std::process::id() % 100_000;
        let bridge = self.host_link(&format!("kb{n}s{subnet}"));
        let host_end = self.host_link(&format!("kv{n}s{subnet}"));
        let pod_end = format!("kp{n}s{subnet}");
        let (host, pod) = (
            Ipv4Addr::new(10, 213, subnet, 1),
            Ipv4Addr::new(10, 213, subnet, 2),
        );
        self.ip(&format!("link add {bridge} type bridge"));
        self.ip(&format!(
            "link add {host_end} type veth peer name {pod_end} netns {}",
            self.name
        ));
        self.ip(&format!("link set {host_end} master {bridge} up"));
        self.ip(&format!("addr add {host}/24 dev {bridge}"));
        self.ip(&format!("link set {bridge} up"));
        self.ip_inside(&format!("addr add {pod}/24 dev {pod_end}"));
        self.ip_inside(&format!("link set {pod_end} up"));
        (host, pod)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for link in &self.host_links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run_ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
