"""Device description TLV values: what an emulated device says about itself.

Device layer, CSMP.md "TLV ids used here" and "Transport" (the registration
TLV set): DeviceID (2), HardwareDesc (11), InterfaceDesc (12), IPAddress (16),
IPRoute (17), InterfaceMetrics (23), IPRouteRPLMetrics (25), WPANStatus (35).
Values are built on demand from the shared profile and the small identity, so
a device stores none of them. Field choices mirror what the reference agent's
Linux sample reports (a loopback and a "lowpan" IEEE 802.15.4 interface).
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from emulator.csmp import csmp_pb2 as pb
from emulator.node.profile import DeviceProfile, Identity

logger = logging.getLogger(__name__)

_IPV6 = 2  # InetAddressType ipv6
_IPV6Z = 4  # InetAddressType ipv6z
_UNICAST = 1
_ORIGIN_DHCP = 4
_ORIGIN_LINKLAYER = 5
_IF_LOOPBACK, _IF_LOWPAN = 1, 2
_ENT_CLASS_MODULE = 9
_LOOPBACK = ipaddress.IPv6Address("::1").packed


_LINK_LOCAL_PREFIX = bytes.fromhex("fe80000000000000")


def packed_address(text: str) -> bytes:
    """The 16 bytes of an IPv6 address text (zone dropped; zeros if invalid).

    ``inet_pton`` (fast) first; ``ipaddress`` decides what it refuses, so the
    result is the same as ``ipaddress.IPv6Address(text).packed``.
    """
    host = text.split("%", 1)[0]
    try:
        return socket.inet_pton(socket.AF_INET6, host)
    except (OSError, ValueError):
        pass
    try:
        return ipaddress.IPv6Address(host).packed
    except ValueError:
        return bytes(16)


def link_local_iid(identity: Identity) -> bytes:
    """Interface id of the link-local address: modified EUI-64 (U/L flipped)."""
    return (identity.eui64 ^ (1 << 57)).to_bytes(8, "big")


def _link_local(identity: Identity) -> bytes:
    return _LINK_LOCAL_PREFIX + link_local_iid(identity)


def device_id(identity: Identity) -> pb.DeviceID:
    """DeviceID (2): type 1 (EUI-64) and 16 upper-case hex digits."""
    return pb.DeviceID(type=1, id=identity.eui64_text)


def hardware_desc(
    identity: Identity, profile: DeviceProfile, running: str
) -> pb.HardwareDesc:
    """HardwareDesc (11); FirmwareRev is the running image's version."""
    return pb.HardwareDesc(
        entPhysicalIndex=1,
        entPhysicalDescr=profile.description,
        entPhysicalClass=_ENT_CLASS_MODULE,
        entPhysicalName="lowpan",
        entPhysicalHardwareRev=profile.hardware_rev,
        entPhysicalFirmwareRev=running,
        entPhysicalSerialNum=identity.serial_text,
        entPhysicalMfgName=profile.manufacturer,
        entPhysicalModelName=profile.model,
        entPhysicalFunction=profile.function,
    )


def interface_desc(identity: Identity) -> list[pb.InterfaceDesc]:
    """InterfaceDesc (12), one per interface."""
    return [
        pb.InterfaceDesc(
            ifIndex=_IF_LOOPBACK, ifName="lo", ifDescr="Loopback", ifType=24
        ),
        pb.InterfaceDesc(
            ifIndex=_IF_LOWPAN,
            ifName="lowpan",
            ifDescr="Ieee154",
            ifType=259,
            ifPhysAddress=identity.eui64.to_bytes(8, "big"),
        ),
    ]


def _ip(index: int, addr: bytes, ifindex: int, origin: int, plen: int) -> pb.IPAddress:
    return pb.IPAddress(
        ipAddressIndex=index,
        ipAddressAddrType=_IPV6,
        ipAddressAddr=addr,
        ipAddressIfIndex=ifindex,
        ipAddressType=_UNICAST,
        ipAddressOrigin=origin,
        ipAddressStatus=1,
        ipAddressPfxLen=plen,
    )


def ip_address(identity: Identity) -> list[pb.IPAddress]:
    """IPAddress (16), one per address: loopback, link-local, global."""
    return [
        _ip(1, _LOOPBACK, _IF_LOOPBACK, _ORIGIN_DHCP, 128),
        _ip(2, _link_local(identity), _IF_LOWPAN, _ORIGIN_LINKLAYER, 128),
        _ip(3, packed_address(identity.address), _IF_LOWPAN, _ORIGIN_DHCP, 64),
    ]


def ip_route(identity: Identity) -> pb.IPRoute:
    """IPRoute (17): the default route via the link's router (fe80::1)."""
    return pb.IPRoute(
        inetCidrRouteIndex=1,
        inetCidrRouteDestType=_IPV6,
        inetCidrRouteDest=bytes(16),
        inetCidrRoutePfxLen=0,
        inetCidrRouteNextHopType=_IPV6Z,
        inetCidrRouteNextHop=bytes.fromhex("fe80" + "00" * 13 + "01"),
        inetCidrRouteIfIndex=_IF_LOWPAN,
    )


def interface_metrics(uptime: int) -> list[pb.InterfaceMetrics]:
    """InterfaceMetrics (23), one per interface (static counters)."""
    return [
        pb.InterfaceMetrics(
            ifIndex=_IF_LOOPBACK, ifAdminStatus=1, ifOperStatus=1, ifLastChange=0
        ),
        pb.InterfaceMetrics(
            ifIndex=_IF_LOWPAN,
            ifAdminStatus=1,
            ifOperStatus=1,
            ifLastChange=min(uptime, 10),
            ifInOctets=0,
            ifOutOctets=0,
        ),
    ]


def rpl_metrics() -> pb.IPRouteRPLMetrics:
    """IPRouteRPLMetrics (25) of the default route (a plausible one hop)."""
    return pb.IPRouteRPLMetrics(
        inetCidrRouteIndex=1,
        instanceIndex=1,
        rank=256,
        hops=1,
        pathEtx=2,
        linkEtx=2,
        rssiForward=-69,
        rssiReverse=-59,
        lqiForward=60,
        lqiReverse=8,
        dagSize=4,
    )


def wpan_status() -> pb.WPANStatus:
    """WPANStatus (35) of the mesh interface."""
    return pb.WPANStatus(
        ifIndex=_IF_LOWPAN,
        SSID=b"meshfleet",
        panid=0xABCD,
        master=False,
        dot1xEnabled=True,
        securityLevel=5,
        rank=256,
        beaconValid=True,
        beaconVersion=1,
        beaconAge=10,
        txPower=20,
        dagSize=4,
    )


def rpl_instance() -> pb.RPLInstance:
    """RPLInstance (53)."""
    return pb.RPLInstance(instanceIndex=1, instanceId=0, rank=256, dagSize=4)
