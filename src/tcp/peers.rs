//! Whether a connection's peer runs on this node: a process of the host, or a pod whose
//! network namespace hangs off this host by a veth. Neither has a network to pace for.
//!
//! The Spark plugin's executors reach the node's kess from their pod addresses, so "loopback
//! or the address it dialled" misses exactly the connections kess serves most on Kubernetes.
//! The kernel knows better: the route to a pod on this node is direct through the pod's veth
//! (Calico, AWS VPC CNI, GKE, Azure) or through a bridge of veths (flannel, kubenet, the
//! bridge plugin), while pods elsewhere are behind a gateway, a tunnel or a NIC.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::routes::{DeviceKind, Route, RouteTable};

/// Whether a connection's peer is on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peers {
    Local,
    Remote,
}

impl Peers {
    pub fn label(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Remote => "remote",
        }
    }
}

/// Why a peer was placed where it was: the `via` label of `kess_tcp_connections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A loopback address.
    Loopback,
    /// One of this host's addresses (the host network).
    HostAddress,
    /// Reached directly through a veth: a pod on this node.
    PodVeth,
    /// Reached directly through a bridge whose ports are all veths: a pod on this node.
    PodBridge,
    /// Reached through a gateway: another host.
    Gateway,
    /// Reached through a NIC, a tunnel, or a bridge with one: another host, or not knowable.
    Device,
    /// Routes are not consulted (`--local-peers host`).
    NotLookedUp,
    /// The kernel could not be asked or did not answer.
    LookupFailed,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::HostAddress => "host_address",
            Self::PodVeth => "pod_veth",
            Self::PodBridge => "pod_bridge",
            Self::Gateway => "gateway",
            Self::Device => "device",
            Self::NotLookedUp => "not_looked_up",
            Self::LookupFailed => "lookup_failed",
        }
    }

    pub fn peers(self) -> Peers {
        match self {
            Self::Loopback | Self::HostAddress | Self::PodVeth | Self::PodBridge => Peers::Local,
            Self::Gateway | Self::Device | Self::NotLookedUp | Self::LookupFailed => Peers::Remote,
        }
    }
}

/// What the route to a peer says about where it runs.
fn judge_route(route: &Route, device: Option<DeviceKind>) -> Reason {
    if route.to_this_host {
        return Reason::HostAddress;
    }
    if route.through_gateway {
        return Reason::Gateway;
    }
    match device {
        Some(DeviceKind::Veth) => Reason::PodVeth,
        Some(DeviceKind::Bridge {
            veth_ports_only: true,
        }) => Reason::PodBridge,
        _ => Reason::Device,
    }
}

/// How far `PeerLocator` looks for peers on this node (`--local-peers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LocalPeers {
    /// Loopback and the address the peer dialled only.
    Host,
    /// Also pods on this node, found through the kernel's routes.
    Node,
}

/// Device kinds are remembered this long: pods come and go, but a device index names one
/// device for its life, and a bridge rarely changes what kind of ports it has.
const DEVICE_TTL: Duration = Duration::from_secs(10);

/// Places each connection's peer on this node or elsewhere.
pub struct PeerLocator {
    routes: Option<RouteTable>,
    devices: Mutex<HashMap<u32, (Instant, DeviceKind)>>,
}

impl std::fmt::Debug for PeerLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLocator")
            .field("asks_routes", &self.routes.is_some())
            .finish()
    }
}

impl PeerLocator {
    /// For `Node`, opens a netlink socket; if that fails, says so and looks no further than
    /// the host.
    pub fn new(scope: LocalPeers) -> Self {
        let routes = match scope {
            LocalPeers::Host => None,
            LocalPeers::Node => match RouteTable::open() {
                Ok(routes) => Some(routes),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot ask the kernel for routes (netlink); pods on this node will count as remote peers");
                    None
                }
            },
        };
        Self {
            routes,
            devices: Mutex::new(HashMap::new()),
        }
    }

    /// Where the peer of a connection between `peer` and `local` runs, and why.
    pub fn locate(&self, peer: SocketAddr, local: SocketAddr) -> Reason {
        let (peer, local) = (peer.ip().to_canonical(), local.ip().to_canonical());
        if peer.is_loopback() {
            return Reason::Loopback;
        }
        if peer == local {
            return Reason::HostAddress;
        }
        let Some(routes) = &self.routes else {
            return Reason::NotLookedUp;
        };
        match self.look_up(routes, peer) {
            Ok(reason) => reason,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "route lookup failed; counting the peer as remote");
                Reason::LookupFailed
            }
        }
    }

    fn look_up(&self, routes: &RouteTable, peer: IpAddr) -> std::io::Result<Reason> {
        let route = routes.route_to(peer)?;
        let device = match route.device {
            Some(index) if !route.to_this_host && !route.through_gateway => {
                Some(self.device_kind(routes, index)?)
            }
            _ => None,
        };
        Ok(judge_route(&route, device))
    }

    fn device_kind(&self, routes: &RouteTable, index: u32) -> std::io::Result<DeviceKind> {
        let now = Instant::now();
        let cached = self.devices.lock().ok().and_then(|devices| {
            devices
                .get(&index)
                .filter(|(at, _)| now.duration_since(*at) < DEVICE_TTL)
                .map(|(_, kind)| *kind)
        });
        if let Some(kind) = cached {
            return Ok(kind);
        }
        let kind = routes.device_kind(index)?;
        if let Ok(mut devices) = self.devices.lock() {
            devices.retain(|_, (at, _)| now.duration_since(*at) < DEVICE_TTL);
            devices.insert(index, (now, kind));
        }
        Ok(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn peers_on_this_host_are_loopback_or_at_the_address_they_dialled() {
        let host_only = PeerLocator::new(LocalPeers::Host);
        let node = addr("10.0.0.5:7337");
        for (peer, reason) in [
            ("127.0.0.1:5000", Reason::Loopback),
            ("127.0.0.2:5000", Reason::Loopback),
            ("[::1]:5000", Reason::Loopback),
            ("[::ffff:127.0.0.1]:5000", Reason::Loopback),
            ("10.0.0.5:40000", Reason::HostAddress),
        ] {
            assert_eq!(host_only.locate(addr(peer), node), reason, "{peer}");
        }
        assert_eq!(
            host_only.locate(
                addr("[::ffff:10.0.0.5]:4000"),
                addr("[::ffff:10.0.0.5]:7337")
            ),
            Reason::HostAddress
        );
        for peer in ["10.0.0.6:5000", "192.168.1.5:5000", "[fe80::1]:5000"] {
            let reason = host_only.locate(addr(peer), node);
            assert_eq!(reason, Reason::NotLookedUp, "{peer}");
            assert_eq!(reason.peers(), Peers::Remote);
        }
    }

    #[test]
    fn a_route_says_local_only_for_this_hosts_addresses_and_pods_behind_veths() {
        let direct = |device| Route {
            to_this_host: false,
            through_gateway: false,
            device,
        };
        let cases = [
            (
                Route {
                    to_this_host: true,
                    through_gateway: false,
                    device: Some(1),
                },
                None,
                Reason::HostAddress,
            ),
            (direct(Some(9)), Some(DeviceKind::Veth), Reason::PodVeth),
            (
                direct(Some(9)),
                Some(DeviceKind::Bridge {
                    veth_ports_only: true,
                }),
                Reason::PodBridge,
            ),
            // A bridge holding the NIC (or a tunnel) reaches other hosts too.
            (
                direct(Some(9)),
                Some(DeviceKind::Bridge {
                    veth_ports_only: false,
                }),
                Reason::Device,
            ),
            // A peer on the NIC's own subnet (AWS VPC CNI's pods on other nodes).
            (direct(Some(2)), Some(DeviceKind::Other), Reason::Device),
            (direct(None), None, Reason::Device),
            (
                Route {
                    to_this_host: false,
                    through_gateway: true,
                    device: Some(9),
                },
                Some(DeviceKind::Veth),
                Reason::Gateway,
            ),
        ];
        for (route, device, want) in cases {
            assert_eq!(judge_route(&route, device), want, "{route:?} {device:?}");
        }
        for (reason, peers) in [
            (Reason::PodVeth, Peers::Local),
            (Reason::PodBridge, Peers::Local),
            (Reason::HostAddress, Peers::Local),
            (Reason::Gateway, Peers::Remote),
            (Reason::Device, Peers::Remote),
            (Reason::LookupFailed, Peers::Remote),
        ] {
            assert_eq!(reason.peers(), peers, "{reason:?}");
        }
    }

    #[test]
    fn this_hosts_other_addresses_are_found_through_the_routes() {
        let locator = PeerLocator::new(LocalPeers::Node);
        // Any address of this host other than the one dialled: the kernel's local table.
        let Some(other) = nix::ifaddrs::getifaddrs()
            .unwrap()
            .filter_map(|i| i.address?.as_sockaddr_in().map(|a| a.ip()))
            .find(|ip| !ip.is_loopback())
        else {
            eprintln!("no non-loopback IPv4 address on this host");
            return;
        };
        let peer = SocketAddr::new(IpAddr::V4(other), 40000);
        assert_eq!(
            locator.locate(peer, addr("127.0.0.1:7337")),
            Reason::HostAddress
        );
        // An address no route leads to directly: behind the default gateway, or unroutable.
        let far = locator.locate(addr("198.51.100.7:40000"), addr("127.0.0.1:7337"));
        assert!(
            matches!(far, Reason::Gateway | Reason::LookupFailed | Reason::Device),
            "{far:?}"
        );
        assert_eq!(far.peers(), Peers::Remote);
    }
}
