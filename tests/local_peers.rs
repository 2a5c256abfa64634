//! Pods on this node are told apart from other hosts by the kernel's routes: built here for
//! real, with a network namespace standing in for a pod, a veth pair (Calico-style, a /32
//! route per pod) and a bridge of veths (flannel-style). Needs root (CAP_NET_ADMIN) and
//! iproute2; without them the tests say so and pass.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;

use kess::tcp::{congestion_control, CongestionPolicy, LocalPeers, PeerLocator, Peers, Reason};

/// A network namespace and the devices made for one test, removed on drop.
struct Sandbox {
    netns: String,
    host_links: Vec<String>,
}

impl Sandbox {
    /// `None` when this machine does not let the test build networks.
    fn new(tag: &str) -> Option<Self> {
        let netns = format!("kess-{tag}-{}", std::process::id());
        let made = Command::new("ip").args(["netns", "add", &netns]).output();
        match made {
            Ok(out) if out.status.success() => Some(Self {
                netns,
                host_links: Vec::new(),
            }),
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

    fn ip(&self, args: &str) {
        run("ip", args);
    }

    fn ip_in_pod(&self, args: &str) {
        run("ip", &format!("-n {} {args}", self.netns));
    }

    fn host_link(&mut self, name: &str) -> String {
        self.host_links.push(name.to_string());
        name.to_string()
    }

    /// Connects to `addr` from inside the namespace and returns the accepted connection's
    /// peer and local addresses and the socket.
    fn connect_from_pod(
        &self,
        listener: &TcpListener,
        to: SocketAddr,
    ) -> (TcpStream, SocketAddr, SocketAddr) {
        let netns = format!("/var/run/netns/{}", self.netns);
        let client = std::thread::spawn(move || {
            let ns = std::fs::File::open(&netns).unwrap();
            // setns moves only this thread into the pod's network.
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            TcpStream::connect(to).unwrap()
        });
        let (accepted, peer) = listener.accept().unwrap();
        let _client = client.join().unwrap();
        let local = accepted.local_addr().unwrap();
        (accepted, peer, local)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for link in &self.host_links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

fn run(program: &str, args: &str) {
    let out = Command::new(program)
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn suffix() -> u32 {
    std::process::id() % 100_000
}

fn listener_with_policy(addr: &str) -> (TcpListener, CongestionPolicy) {
    let listener = TcpListener::bind(addr).unwrap();
    // Remote peers get cubic here, so that being switched shows.
    let policy = CongestionPolicy::configure(
        &listener,
        Some("cubic"),
        Some("reno"),
        Arc::new(PeerLocator::new(LocalPeers::Node)),
    )
    .unwrap();
    (listener, policy)
}

#[test]
fn a_pod_behind_its_own_veth_is_a_local_peer() {
    let Some(mut sandbox) = Sandbox::new("veth") else {
        return;
    };
    let n = suffix();
    let host_end = sandbox.host_link(&format!("kv{n}h"));
    let pod_end = format!("kv{n}p");
    sandbox.ip(&format!(
        "link add {host_end} type veth peer name {pod_end} netns {}",
        sandbox.netns
    ));
    // Calico's shape: the host reaches the pod by a /32 route through the pod's veth.
    sandbox.ip(&format!("addr add 10.213.7.1/32 dev {host_end}"));
    sandbox.ip(&format!("link set {host_end} up"));
    sandbox.ip(&format!("route add 10.213.7.2/32 dev {host_end}"));
    sandbox.ip_in_pod(&format!("addr add 10.213.7.2/32 dev {pod_end}"));
    sandbox.ip_in_pod(&format!("link set {pod_end} up"));
    sandbox.ip_in_pod(&format!("route add 10.213.7.1/32 dev {pod_end}"));

    let (listener, policy) = listener_with_policy("10.213.7.1:0");
    let (socket, peer, local) = sandbox.connect_from_pod(&listener, listener.local_addr().unwrap());
    assert_eq!(peer.ip().to_string(), "10.213.7.2");
    assert_eq!(policy.on_accept(&socket, peer, local), Reason::PodVeth);
    assert_eq!(congestion_control(&socket).unwrap(), "reno");

    // Told to look no further than the host, the same pod is remote and gets cubic.
    let host_only = CongestionPolicy {
        locator: Arc::new(PeerLocator::new(LocalPeers::Host)),
        ..policy
    };
    let (socket, peer, local) = sandbox.connect_from_pod(&listener, listener.local_addr().unwrap());
    let reason = host_only.on_accept(&socket, peer, local);
    assert_eq!(
        (reason, reason.peers()),
        (Reason::NotLookedUp, Peers::Remote)
    );
    assert_eq!(congestion_control(&socket).unwrap(), "cubic");
}

#[test]
fn a_pod_on_a_bridge_of_veths_is_local_but_not_behind_a_bridge_with_a_tunnel_or_a_gateway() {
    let Some(mut sandbox) = Sandbox::new("bridge") else {
        return;
    };
    let n = suffix();
    let bridge = sandbox.host_link(&format!("kb{n}"));
    let host_end = sandbox.host_link(&format!("kw{n}h"));
    let pod_end = format!("kw{n}p");
    // flannel's shape: pods' veths are ports of one bridge that holds the node's pod subnet.
    sandbox.ip(&format!("link add {bridge} type bridge"));
    sandbox.ip(&format!(
        "link add {host_end} type veth peer name {pod_end} netns {}",
        sandbox.netns
    ));
    sandbox.ip(&format!("link set {host_end} master {bridge} up"));
    sandbox.ip(&format!("addr add 10.213.8.1/24 dev {bridge}"));
    sandbox.ip(&format!("link set {bridge} up"));
    sandbox.ip_in_pod(&format!("addr add 10.213.8.2/24 dev {pod_end}"));
    sandbox.ip_in_pod(&format!("link set {pod_end} up"));

    let (listener, policy) = listener_with_policy("10.213.8.1:0");
    let (socket, peer, local) = sandbox.connect_from_pod(&listener, listener.local_addr().unwrap());
    assert_eq!(policy.on_accept(&socket, peer, local), Reason::PodBridge);
    assert_eq!(congestion_control(&socket).unwrap(), "reno");

    let locator = PeerLocator::new(LocalPeers::Node);
    let from = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 40000);
    // Beyond a gateway on the pod subnet: another node's pods (host-gw routing).
    sandbox.ip("route add 10.213.10.0/24 via 10.213.8.2");
    let reason = locator.locate(from("10.213.10.5"), local);
    assert_eq!((reason, reason.peers()), (Reason::Gateway, Peers::Remote));

    // A bridge that also holds a tunnel reaches other hosts: its peers stay remote.
    let tunnel_bridge = sandbox.host_link(&format!("kt{n}"));
    let tunnel = sandbox.host_link(&format!("kx{n}"));
    sandbox.ip(&format!("link add {tunnel_bridge} type bridge"));
    sandbox.ip(&format!("link add {tunnel} type vxlan id {n} dstport 4789"));
    sandbox.ip(&format!("link set {tunnel} master {tunnel_bridge}"));
    sandbox.ip(&format!("addr add 10.213.9.1/24 dev {tunnel_bridge}"));
    sandbox.ip(&format!("link set {tunnel_bridge} up"));
    let reason = locator.locate(from("10.213.9.2"), local);
    assert_eq!((reason, reason.peers()), (Reason::Device, Peers::Remote));
}
