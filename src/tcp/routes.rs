//! The kernel's answer to "how would this host reach that address?", over rtnetlink: the route
//! `ip route get` prints, and the kind of device it leaves by (`ip -d link`). Asking the kernel
//! rather than parsing `/proc/net/route` gets policy routing and every table right, and the
//! device kind (veth, bridge, vxlan…) is not in sysfs.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt::ReceiveTimeout, AddressFamily as SocketFamily,
    MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

/// A kernel that does not answer within this is treated as not knowing.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// The route the kernel would use to reach an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The address is one of this host's own (`local` in `ip route get`).
    pub to_this_host: bool,
    /// The route goes through a next hop (a gateway, `via`, or several paths).
    pub through_gateway: bool,
    /// The device it leaves by.
    pub device: Option<u32>,
}

/// What kind of device a route leaves by, as far as telling pods on this node apart goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// One end of a veth pair: the other end is in a pod's network namespace on this host.
    Veth,
    /// A bridge; pods hang off it by veths, but a bridge can also hold a NIC or a tunnel that
    /// leads to other hosts.
    Bridge { veth_ports_only: bool },
    /// Anything else: a NIC, a tunnel, a VLAN, a macvlan (which may lead off the host).
    Other,
}

/// A netlink socket to the kernel's routing, one request at a time.
pub struct RouteTable {
    socket: Mutex<Requests>,
}

struct Requests {
    fd: OwnedFd,
    sequence: u32,
    buffer: Vec<u8>,
}

impl RouteTable {
    pub fn open() -> io::Result<Self> {
        let fd = socket(
            SocketFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        setsockopt(
            &fd,
            ReceiveTimeout,
            &TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0),
        )?;
        Ok(Self {
            socket: Mutex::new(Requests {
                fd,
                sequence: 0,
                // Dump replies come in datagrams of at most 32 KiB.
                buffer: vec![0; 64 << 10],
            }),
        })
    }

    /// The route to `ip`, as `ip route get` finds it.
    pub fn route_to(&self, ip: IpAddr) -> io::Result<Route> {
        let mut request = RouteMessage::default();
        let (family, bits) = match ip {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        request.header.address_family = family;
        request.header.destination_prefix_length = bits;
        request
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(ip)));
        let RouteNetlinkMessage::NewRoute(route) =
            self.ask_one(RouteNetlinkMessage::GetRoute(request))?
        else {
            return Err(io::Error::other(format!(
                "no route to {ip} in the kernel's answer"
            )));
        };
        Ok(Route {
            to_this_host: route.header.kind == RouteType::Local,
            through_gateway: route.attributes.iter().any(|a| {
                matches!(
                    a,
                    RouteAttribute::Gateway(_)
                        | RouteAttribute::Via(_)
                        | RouteAttribute::MultiPath(_)
                )
            }),
            device: route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(index) => Some(*index),
                _ => None,
            }),
        })
    }

    /// The kind of device `index`; for a bridge, whether all its ports are veths.
    pub fn device_kind(&self, index: u32) -> io::Result<DeviceKind> {
        let mut request = LinkMessage::default();
        request.header.index = index;
        let RouteNetlinkMessage::NewLink(link) =
            self.ask_one(RouteNetlinkMessage::GetLink(request))?
        else {
            return Err(io::Error::other(format!(
                "no device {index} in the kernel's answer"
            )));
        };
        Ok(match kind_of(&link) {
            Some(InfoKind::Veth) => DeviceKind::Veth,
            Some(InfoKind::Bridge) => DeviceKind::Bridge {
                veth_ports_only: self.bridge_has_veth_ports_only(index)?,
            },
            _ => DeviceKind::Other,
        })
    }

    fn bridge_has_veth_ports_only(&self, bridge: u32) -> io::Result<bool> {
        // Kernels since 4.15 filter the dump by controller; older ones send every device,
        // so the filter is applied here as well.
        let mut request = LinkMessage::default();
        request.attributes.push(LinkAttribute::Controller(bridge));
        let links = self.ask(RouteNetlinkMessage::GetLink(request), true)?;
        Ok(links.iter().all(|m| match m {
            RouteNetlinkMessage::NewLink(link) => {
                let port = link.attributes.contains(&LinkAttribute::Controller(bridge));
                !port || kind_of(link) == Some(&InfoKind::Veth)
            }
            _ => true,
        }))
    }

    /// Sends one request and returns its one answer.
    fn ask_one(&self, message: RouteNetlinkMessage) -> io::Result<RouteNetlinkMessage> {
        self.ask(message, false)?
            .pop()
            .ok_or_else(|| io::Error::other("the kernel sent no answer"))
    }

    /// Sends one request and collects its answers (all parts of a dump). Answers to an earlier
    /// request that timed out are skipped by their sequence number.
    fn ask(
        &self,
        message: RouteNetlinkMessage,
        dump: bool,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut requests = self
            .socket
            .lock()
            .map_err(|_| io::Error::other("netlink socket lock poisoned"))?;
        let requests = &mut *requests;
        requests.sequence = requests.sequence.wrapping_add(1);
        let sequence = requests.sequence;
        let mut packet =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
        packet.header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        packet.header.sequence_number = sequence;
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        send(requests.fd.as_raw_fd(), &out, MsgFlags::empty())?;

        let mut answers = Vec::new();
        loop {
            let len = recv(
                requests.fd.as_raw_fd(),
                &mut requests.buffer,
                MsgFlags::empty(),
            )?;
            let mut datagram = &requests.buffer[..len];
            while !datagram.is_empty() {
                let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(datagram)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let size = (message.header.length as usize).clamp(1, datagram.len());
                datagram = &datagram[size.next_multiple_of(4).min(datagram.len())..];
                if message.header.sequence_number != sequence {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::InnerMessage(inner) => {
                        answers.push(inner);
                        if !dump {
                            return Ok(answers);
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(e) => {
                        return Err(match e.code {
                            Some(code) => io::Error::from_raw_os_error(-code.get()),
                            None => io::Error::other("the kernel acknowledged without answering"),
                        })
                    }
                    _ => {}
                }
            }
        }
    }
}

fn kind_of(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_own_addresses_route_to_this_host() {
        let routes = RouteTable::open().unwrap();
        for ip in ["127.0.0.1", "::1"] {
            let route = routes.route_to(ip.parse().unwrap()).unwrap();
            assert!(route.to_this_host, "{ip}: {route:?}");
        }
    }

    #[test]
    fn the_loopback_device_is_neither_veth_nor_bridge() {
        let routes = RouteTable::open().unwrap();
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        assert_eq!(routes.device_kind(lo).unwrap(), DeviceKind::Other);
    }

    #[test]
    fn an_unknown_device_is_an_error() {
        let routes = RouteTable::open().unwrap();
        let err = routes.device_kind(i32::MAX as u32 - 7).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc_enodev()), "{err}");
    }

    fn libc_enodev() -> i32 {
        nix::errno::Errno::ENODEV as i32
    }
}
