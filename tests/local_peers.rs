//! Pods on this node are told apart from other hosts by the kernel's routes: built here for
//! real, with a network namespace standing in for a pod, a veth pair (Calico's shape, a /32
//! route per pod) and a bridge of veths (flannel's shape). Needs root (CAP_NET_ADMIN) and
//! iproute2; without them the tests say so and pass.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use common::netns::Netns;
use kess::tcp::{congestion_control, CongestionPolicy, LocalPeers, PeerLocator, Peers, Reason};

/// Connects to `listener` from inside `netns` and returns the accepted socket with its peer and
/// local addresses.
fn connect_from_pod(netns: &Netns, listener: &TcpListener) -> (TcpStream, SocketAddr, SocketAddr) {
    let (path, to) = (netns.path(), listener.local_addr().unwrap());
    let client = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        // setns moves only this thread into the pod's network.
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        TcpStream::connect(to).unwrap()
    });
    let (accepted, peer) = listener.accept().unwrap();
    let _client = client.join().unwrap();
    let local = accepted.local_addr().unwrap();
    (accepted, peer, local)
}

/// A listener whose remote peers get cubic, so that being switched shows.
fn listener_with_policy(addr: &str) -> (TcpListener, CongestionPolicy) {
    let listener = TcpListener::bind(addr).unwrap();
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
    let Some(mut pod) = Netns::new("veth") else {
        return;
    };
    let (host, pod_ip) = pod.veth_to_host(7);
    let (listener, policy) = listener_with_policy(&format!("{host}:0"));
    let (socket, peer, local) = connect_from_pod(&pod, &listener);
    assert_eq!(peer.ip(), pod_ip);
    assert_eq!(policy.on_accept(&socket, peer, local), Reason::PodVeth);
    assert_eq!(congestion_control(&socket).unwrap(), "reno");

    // Told to look no further than the host, the same pod is remote and gets cubic.
    let host_only = CongestionPolicy {
        locator: Arc::new(PeerLocator::new(LocalPeers::Host)),
        ..policy
    };
    let (socket, peer, local) = connect_from_pod(&pod, &listener);
    let reason = host_only.on_accept(&socket, peer, local);
    assert_eq!(
        (reason, reason.peers()),
        (Reason::NotLookedUp, Peers::Remote)
    );
    assert_eq!(congestion_control(&socket).unwrap(), "cubic");
}

#[test]
fn a_pod_on_a_bridge_of_veths_is_local_but_not_behind_a_bridge_with_a_tunnel_or_a_gateway() {
    let Some(mut pod) = Netns::new("bridge") else {
        return;
    };
    let (host, _) = pod.bridge_to_host(8);
    let (listener, policy) = listener_with_policy(&format!("{host}:0"));
    let (socket, peer, local) = connect_from_pod(&pod, &listener);
    assert_eq!(policy.on_accept(&socket, peer, local), Reason::PodBridge);
    assert_eq!(congestion_control(&socket).unwrap(), "reno");

    let locator = PeerLocator::new(LocalPeers::Node);
    let from = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 40000);
    // Beyond a gateway on the pod subnet: another node's pods (host-gw routing).
    pod.ip("route add 10.213.10.0/24 via 10.213.8.2");
    let reason = locator.locate(from("10.213.10.5"), local);
    assert_eq!((reason, reason.peers()), (Reason::Gateway, Peers::Remote));

    // A bridge that also holds a tunnel reaches other hosts: its peers stay remote.
    let n = std::process::id() % 100_000;
    let tunnel_bridge = pod.host_link(&format!("kt{n}"));
    let tunnel = pod.host_link(&format!("kx{n}"));
    pod.ip(&format!("link add {tunnel_bridge} type bridge"));
    pod.ip(&format!("link add {tunnel} type vxlan id {n} dstport 4789"));
    pod.ip(&format!("link set {tunnel} master {tunnel_bridge}"));
    pod.ip(&format!("addr add 10.213.9.1/24 dev {tunnel_bridge}"));
    pod.ip(&format!("link set {tunnel_bridge} up"));
    let reason = locator.locate(from("10.213.9.2"), local);
    assert_eq!((reason, reason.peers()), (Reason::Device, Peers::Remote));
}
