from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TlvIndex(_message.Message):
    __slots__ = ("tlvid",)
    TLVID_FIELD_NUMBER: _ClassVar[int]
    tlvid: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tlvid: _Optional[_Iterable[str]] = ...) -> None: ...

class DeviceID(_message.Message):
    __slots__ = ("type", "id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    type: int
    id: str
    def __init__(self, type: _Optional[int] = ..., id: _Optional[str] = ...) -> None: ...

class SessionID(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DescriptionRequest(_message.Message):
    __slots__ = ("tlvid",)
    TLVID_FIELD_NUMBER: _ClassVar[int]
    tlvid: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tlvid: _Optional[_Iterable[str]] = ...) -> None: ...

class HardwareDesc(_message.Message):
    __slots__ = ("entPhysicalIndex", "entPhysicalDescr", "entPhysicalVendorType", "entPhysicalContainedIn", "entPhysicalClass", "entPhysicalParentRelPos", "entPhysicalName", "entPhysicalHardwareRev", "entPhysicalFirmwareRev", "entPhysicalSoftwareRev", "entPhysicalSerialNum", "entPhysicalMfgName", "entPhysicalModelName", "entPhysicalAssetID", "entPhysicalMfgDate", "entPhysicalURIs", "entPhysicalFunction", "entPhysicalOUI")
    ENTPHYSICALINDEX_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALDESCR_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALVENDORTYPE_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALCONTAINEDIN_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALCLASS_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALPARENTRELPOS_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALNAME_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALHARDWAREREV_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALFIRMWAREREV_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALSOFTWAREREV_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALSERIALNUM_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALMFGNAME_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALMODELNAME_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALASSETID_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALMFGDATE_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALURIS_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALFUNCTION_FIELD_NUMBER: _ClassVar[int]
    ENTPHYSICALOUI_FIELD_NUMBER: _ClassVar[int]
    entPhysicalIndex: int
    entPhysicalDescr: str
    entPhysicalVendorType: bytes
    entPhysicalContainedIn: int
    entPhysicalClass: int
    entPhysicalParentRelPos: int
    entPhysicalName: str
    entPhysicalHardwareRev: str
    entPhysicalFirmwareRev: str
    entPhysicalSoftwareRev: str
    entPhysicalSerialNum: str
    entPhysicalMfgName: str
    entPhysicalModelName: str
    entPhysicalAssetID: str
    entPhysicalMfgDate: int
    entPhysicalURIs: str
    entPhysicalFunction: int
    entPhysicalOUI: str
    def __init__(self, entPhysicalIndex: _Optional[int] = ..., entPhysicalDescr: _Optional[str] = ..., entPhysicalVendorType: _Optional[bytes] = ..., entPhysicalContainedIn: _Optional[int] = ..., entPhysicalClass: _Optional[int] = ..., entPhysicalParentRelPos: _Optional[int] = ..., entPhysicalName: _Optional[str] = ..., entPhysicalHardwareRev: _Optional[str] = ..., entPhysicalFirmwareRev: _Optional[str] = ..., entPhysicalSoftwareRev: _Optional[str] = ..., entPhysicalSerialNum: _Optional[str] = ..., entPhysicalMfgName: _Optional[str] = ..., entPhysicalModelName: _Optional[str] = ..., entPhysicalAssetID: _Optional[str] = ..., entPhysicalMfgDate: _Optional[int] = ..., entPhysicalURIs: _Optional[str] = ..., entPhysicalFunction: _Optional[int] = ..., entPhysicalOUI: _Optional[str] = ...) -> None: ...

class InterfaceDesc(_message.Message):
    __slots__ = ("ifIndex", "ifName", "ifDescr", "ifType", "ifMtu", "ifPhysAddress")
    IFINDEX_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    IFDESCR_FIELD_NUMBER: _ClassVar[int]
    IFTYPE_FIELD_NUMBER: _ClassVar[int]
    IFMTU_FIELD_NUMBER: _ClassVar[int]
    IFPHYSADDRESS_FIELD_NUMBER: _ClassVar[int]
    ifIndex: int
    ifName: str
    ifDescr: str
    ifType: int
    ifMtu: int
    ifPhysAddress: bytes
    def __init__(self, ifIndex: _Optional[int] = ..., ifName: _Optional[str] = ..., ifDescr: _Optional[str] = ..., ifType: _Optional[int] = ..., ifMtu: _Optional[int] = ..., ifPhysAddress: _Optional[bytes] = ...) -> None: ...

class ReportSubscribe(_message.Message):
    __slots__ = ("interval", "tlvid")
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    TLVID_FIELD_NUMBER: _ClassVar[int]
    interval: int
    tlvid: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, interval: _Optional[int] = ..., tlvid: _Optional[_Iterable[str]] = ...) -> None: ...

class IPAddress(_message.Message):
    __slots__ = ("ipAddressIndex", "ipAddressAddrType", "ipAddressAddr", "ipAddressIfIndex", "ipAddressType", "ipAddressOrigin", "ipAddressStatus", "ipAddressCreated", "ipAddressLastChanged", "ipAddressPfxLen")
    IPADDRESSINDEX_FIELD_NUMBER: _ClassVar[int]
    IPADDRESSADDRTYPE_FIELD_NUMBER: _ClassVar[int]
    IPADDRESSADDR_FIELD_NUMBER: _ClassVar[int]
    IPADDRESSIFINDEX_FIELD_NUMBER: _ClassVar[int]
    IPADDRESSTYPE_FIELD_NUMBER: _ClassVar[int]
    IPADDRESSORIGIN_FIELD_NUMBER: _ClassVar[int]
    IPADDRESSSTATUS_FIELD_NUMBER: _ClassVar[int]
    IPADDRESSCREATED_FIELD_NUMBER: _ClassVar[int]
    IPADDRESSLASTCHANGED_FIELD_NUMBER: _ClassVar[int]
    IPADDRESSPFXLEN_FIELD_NUMBER: _ClassVar[int]
    ipAddressIndex: int
    ipAddressAddrType: int
    ipAddressAddr: bytes
    ipAddressIfIndex: int
    ipAddressType: int
    ipAddressOrigin: int
    ipAddressStatus: int
    ipAddressCreated: int
    ipAddressLastChanged: int
    ipAddressPfxLen: int
    def __init__(self, ipAddressIndex: _Optional[int] = ..., ipAddressAddrType: _Optional[int] = ..., ipAddressAddr: _Optional[bytes] = ..., ipAddressIfIndex: _Optional[int] = ..., ipAddressType: _Optional[int] = ..., ipAddressOrigin: _Optional[int] = ..., ipAddressStatus: _Optional[int] = ..., ipAddressCreated: _Optional[int] = ..., ipAddressLastChanged: _Optional[int] = ..., ipAddressPfxLen: _Optional[int] = ...) -> None: ...

class IPRoute(_message.Message):
    __slots__ = ("inetCidrRouteIndex", "inetCidrRouteDestType", "inetCidrRouteDest", "inetCidrRoutePfxLen", "inetCidrRouteNextHopType", "inetCidrRouteNextHop", "inetCidrRouteIfIndex", "inetCidrRouteType", "inetCidrRouteProto", "inetCidrRouteAge")
    INETCIDRROUTEINDEX_FIELD_NUMBER: _ClassVar[int]
    INETCIDRROUTEDESTTYPE_FIELD_NUMBER: _ClassVar[int]
    INETCIDRROUTEDEST_FIELD_NUMBER: _ClassVar[int]
    INETCIDRROUTEPFXLEN_FIELD_NUMBER: _ClassVar[int]
    INETCIDRROUTENEXTHOPTYPE_FIELD_NUMBER: _ClassVar[int]
    INETCIDRROUTENEXTHOP_FIELD_NUMBER: _ClassVar[int]
    INETCIDRROUTEIFINDEX_FIELD_NUMBER: _ClassVar[int]
    INETCIDRROUTETYPE_FIELD_NUMBER: _ClassVar[int]
    INETCIDRROUTEPROTO_FIELD_NUMBER: _ClassVar[int]
    INETCIDRROUTEAGE_FIELD_NUMBER: _ClassVar[int]
    inetCidrRouteIndex: int
    inetCidrRouteDestType: int
    inetCidrRouteDest: bytes
    inetCidrRoutePfxLen: int
    inetCidrRouteNextHopType: int
    inetCidrRouteNextHop: bytes
    inetCidrRouteIfIndex: int
    inetCidrRouteType: int
    inetCidrRouteProto: int
    inetCidrRouteAge: int
    def __init__(self, inetCidrRouteIndex: _Optional[int] = ..., inetCidrRouteDestType: _Optional[int] = ..., inetCidrRouteDest: _Optional[bytes] = ..., inetCidrRoutePfxLen: _Optional[int] = ..., inetCidrRouteNextHopType: _Optional[int] = ..., inetCidrRouteNextHop: _Optional[bytes] = ..., inetCidrRouteIfIndex: _Optional[int] = ..., inetCidrRouteType: _Optional[int] = ..., inetCidrRouteProto: _Optional[int] = ..., inetCidrRouteAge: _Optional[int] = ...) -> None: ...

class CurrentTime(_message.Message):
    __slots__ = ("posix", "iso8601", "source")
    POSIX_FIELD_NUMBER: _ClassVar[int]
    ISO8601_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    posix: int
    iso8601: str
    source: int
    def __init__(self, posix: _Optional[int] = ..., iso8601: _Optional[str] = ..., source: _Optional[int] = ...) -> None: ...

class Uptime(_message.Message):
    __slots__ = ("sysUpTime",)
    SYSUPTIME_FIELD_NUMBER: _ClassVar[int]
    sysUpTime: int
    def __init__(self, sysUpTime: _Optional[int] = ...) -> None: ...

class InterfaceMetrics(_message.Message):
    __slots__ = ("ifIndex", "ifInSpeed", "ifOutSpeed", "ifAdminStatus", "ifOperStatus", "ifLastChange", "ifInOctets", "ifOutOctets", "ifInDiscards", "ifInErrors", "ifOutDiscards", "ifOutErrors")
    IFINDEX_FIELD_NUMBER: _ClassVar[int]
    IFINSPEED_FIELD_NUMBER: _ClassVar[int]
    IFOUTSPEED_FIELD_NUMBER: _ClassVar[int]
    IFADMINSTATUS_FIELD_NUMBER: _ClassVar[int]
    IFOPERSTATUS_FIELD_NUMBER: _ClassVar[int]
    IFLASTCHANGE_FIELD_NUMBER: _ClassVar[int]
    IFINOCTETS_FIELD_NUMBER: _ClassVar[int]
    IFOUTOCTETS_FIELD_NUMBER: _ClassVar[int]
    IFINDISCARDS_FIELD_NUMBER: _ClassVar[int]
    IFINERRORS_FIELD_NUMBER: _ClassVar[int]
    IFOUTDISCARDS_FIELD_NUMBER: _ClassVar[int]
    IFOUTERRORS_FIELD_NUMBER: _ClassVar[int]
    ifIndex: int
    ifInSpeed: int
    ifOutSpeed: int
    ifAdminStatus: int
    ifOperStatus: int
    ifLastChange: int
    ifInOctets: int
    ifOutOctets: int
    ifInDiscards: int
    ifInErrors: int
    ifOutDiscards: int
    ifOutErrors: int
    def __init__(self, ifIndex: _Optional[int] = ..., ifInSpeed: _Optional[int] = ..., ifOutSpeed: _Optional[int] = ..., ifAdminStatus: _Optional[int] = ..., ifOperStatus: _Optional[int] = ..., ifLastChange: _Optional[int] = ..., ifInOctets: _Optional[int] = ..., ifOutOctets: _Optional[int] = ..., ifInDiscards: _Optional[int] = ..., ifInErrors: _Optional[int] = ..., ifOutDiscards: _Optional[int] = ..., ifOutErrors: _Optional[int] = ...) -> None: ...

class IPRouteRPLMetrics(_message.Message):
    __slots__ = ("inetCidrRouteIndex", "instanceIndex", "rank", "hops", "pathEtx", "linkEtx", "rssiForward", "rssiReverse", "lqiForward", "lqiReverse", "dagSize")
    INETCIDRROUTEINDEX_FIELD_NUMBER: _ClassVar[int]
    INSTANCEINDEX_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    PATHETX_FIELD_NUMBER: _ClassVar[int]
    LINKETX_FIELD_NUMBER: _ClassVar[int]
    RSSIFORWARD_FIELD_NUMBER: _ClassVar[int]
    RSSIREVERSE_FIELD_NUMBER: _ClassVar[int]
    LQIFORWARD_FIELD_NUMBER: _ClassVar[int]
    LQIREVERSE_FIELD_NUMBER: _ClassVar[int]
    DAGSIZE_FIELD_NUMBER: _ClassVar[int]
    inetCidrRouteIndex: int
    instanceIndex: int
    rank: int
    hops: int
    pathEtx: int
    linkEtx: int
    rssiForward: int
    rssiReverse: int
    lqiForward: int
    lqiReverse: int
    dagSize: int
    def __init__(self, inetCidrRouteIndex: _Optional[int] = ..., instanceIndex: _Optional[int] = ..., rank: _Optional[int] = ..., hops: _Optional[int] = ..., pathEtx: _Optional[int] = ..., linkEtx: _Optional[int] = ..., rssiForward: _Optional[int] = ..., rssiReverse: _Optional[int] = ..., lqiForward: _Optional[int] = ..., lqiReverse: _Optional[int] = ..., dagSize: _Optional[int] = ...) -> None: ...

class RebootRequest(_message.Message):
    __slots__ = ("flag",)
    FLAG_FIELD_NUMBER: _ClassVar[int]
    flag: int
    def __init__(self, flag: _Optional[int] = ...) -> None: ...

class WPANStatus(_message.Message):
    __slots__ = ("ifIndex", "SSID", "panid", "master", "dot1xEnabled", "securityLevel", "rank", "beaconValid", "beaconVersion", "beaconAge", "txPower", "dagSize", "metric", "lastChanged", "lastChangedReason", "demoModeEnabled")
    IFINDEX_FIELD_NUMBER: _ClassVar[int]
    SSID_FIELD_NUMBER: _ClassVar[int]
    PANID_FIELD_NUMBER: _ClassVar[int]
    MASTER_FIELD_NUMBER: _ClassVar[int]
    DOT1XENABLED_FIELD_NUMBER: _ClassVar[int]
    SECURITYLEVEL_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    BEACONVALID_FIELD_NUMBER: _ClassVar[int]
    BEACONVERSION_FIELD_NUMBER: _ClassVar[int]
    BEACONAGE_FIELD_NUMBER: _ClassVar[int]
    TXPOWER_FIELD_NUMBER: _ClassVar[int]
    DAGSIZE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    LASTCHANGED_FIELD_NUMBER: _ClassVar[int]
    LASTCHANGEDREASON_FIELD_NUMBER: _ClassVar[int]
    DEMOMODEENABLED_FIELD_NUMBER: _ClassVar[int]
    ifIndex: int
    SSID: bytes
    panid: int
    master: bool
    dot1xEnabled: bool
    securityLevel: int
    rank: int
    beaconValid: bool
    beaconVersion: int
    beaconAge: int
    txPower: int
    dagSize: int
    metric: int
    lastChanged: int
    lastChangedReason: int
    demoModeEnabled: bool
    def __init__(self, ifIndex: _Optional[int] = ..., SSID: _Optional[bytes] = ..., panid: _Optional[int] = ..., master: _Optional[bool] = ..., dot1xEnabled: _Optional[bool] = ..., securityLevel: _Optional[int] = ..., rank: _Optional[int] = ..., beaconValid: _Optional[bool] = ..., beaconVersion: _Optional[int] = ..., beaconAge: _Optional[int] = ..., txPower: _Optional[int] = ..., dagSize: _Optional[int] = ..., metric: _Optional[int] = ..., lastChanged: _Optional[int] = ..., lastChangedReason: _Optional[int] = ..., demoModeEnabled: _Optional[bool] = ...) -> None: ...

class CGMSSettings(_message.Message):
    __slots__ = ("regIntervalMin", "regIntervalMax")
    REGINTERVALMIN_FIELD_NUMBER: _ClassVar[int]
    REGINTERVALMAX_FIELD_NUMBER: _ClassVar[int]
    regIntervalMin: int
    regIntervalMax: int
    def __init__(self, regIntervalMin: _Optional[int] = ..., regIntervalMax: _Optional[int] = ...) -> None: ...

class CGMSStatus(_message.Message):
    __slots__ = ("registered", "NMSAddr", "NMSAddrOrigin", "lastReg", "lastRegReason", "nextReg", "NMSCertValid")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    NMSADDR_FIELD_NUMBER: _ClassVar[int]
    NMSADDRORIGIN_FIELD_NUMBER: _ClassVar[int]
    LASTREG_FIELD_NUMBER: _ClassVar[int]
    LASTREGREASON_FIELD_NUMBER: _ClassVar[int]
    NEXTREG_FIELD_NUMBER: _ClassVar[int]
    NMSCERTVALID_FIELD_NUMBER: _ClassVar[int]
    registered: bool
    NMSAddr: bytes
    NMSAddrOrigin: int
    lastReg: int
    lastRegReason: int
    nextReg: int
    NMSCertValid: bool
    def __init__(self, registered: _Optional[bool] = ..., NMSAddr: _Optional[bytes] = ..., NMSAddrOrigin: _Optional[int] = ..., lastReg: _Optional[int] = ..., lastRegReason: _Optional[int] = ..., nextReg: _Optional[int] = ..., NMSCertValid: _Optional[bool] = ...) -> None: ...

class CGMSNotification(_message.Message):
    __slots__ = ("code", "tlvs")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TLVS_FIELD_NUMBER: _ClassVar[int]
    code: int
    tlvs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, code: _Optional[int] = ..., tlvs: _Optional[_Iterable[int]] = ...) -> None: ...

class CGMSStats(_message.Message):
    __slots__ = ("sigOk", "sigBadAuth", "sigBadValidity", "sigNoSync", "regSucceed", "regAttempts", "regHolds", "regFails", "nmsErrors")
    SIGOK_FIELD_NUMBER: _ClassVar[int]
    SIGBADAUTH_FIELD_NUMBER: _ClassVar[int]
    SIGBADVALIDITY_FIELD_NUMBER: _ClassVar[int]
    SIGNOSYNC_FIELD_NUMBER: _ClassVar[int]
    REGSUCCEED_FIELD_NUMBER: _ClassVar[int]
    REGATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REGHOLDS_FIELD_NUMBER: _ClassVar[int]
    REGFAILS_FIELD_NUMBER: _ClassVar[int]
    NMSERRORS_FIELD_NUMBER: _ClassVar[int]
    sigOk: int
    sigBadAuth: int
    sigBadValidity: int
    sigNoSync: int
    regSucceed: int
    regAttempts: int
    regHolds: int
    regFails: int
    nmsErrors: int
    def __init__(self, sigOk: _Optional[int] = ..., sigBadAuth: _Optional[int] = ..., sigBadValidity: _Optional[int] = ..., sigNoSync: _Optional[int] = ..., regSucceed: _Optional[int] = ..., regAttempts: _Optional[int] = ..., regHolds: _Optional[int] = ..., regFails: _Optional[int] = ..., nmsErrors: _Optional[int] = ...) -> None: ...

class RPLInstance(_message.Message):
    __slots__ = ("instanceIndex", "instanceId", "doDagId", "doDagVersionNumber", "rank", "parentCount", "dagSize")
    INSTANCEINDEX_FIELD_NUMBER: _ClassVar[int]
    INSTANCEID_FIELD_NUMBER: _ClassVar[int]
    DODAGID_FIELD_NUMBER: _ClassVar[int]
    DODAGVERSIONNUMBER_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    PARENTCOUNT_FIELD_NUMBER: _ClassVar[int]
    DAGSIZE_FIELD_NUMBER: _ClassVar[int]
    instanceIndex: int
    instanceId: int
    doDagId: bytes
    doDagVersionNumber: int
    rank: int
    parentCount: int
    dagSize: int
    def __init__(self, instanceIndex: _Optional[int] = ..., instanceId: _Optional[int] = ..., doDagId: _Optional[bytes] = ..., doDagVersionNumber: _Optional[int] = ..., rank: _Optional[int] = ..., parentCount: _Optional[int] = ..., dagSize: _Optional[int] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("type", "id")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    type: int
    id: int
    def __init__(self, type: _Optional[int] = ..., id: _Optional[int] = ...) -> None: ...

class HardwareInfo(_message.Message):
    __slots__ = ("hwId", "vendorHwId")
    HWID_FIELD_NUMBER: _ClassVar[int]
    VENDORHWID_FIELD_NUMBER: _ClassVar[int]
    hwId: str
    vendorHwId: str
    def __init__(self, hwId: _Optional[str] = ..., vendorHwId: _Optional[str] = ...) -> None: ...

class TransferRequest(_message.Message):
    __slots__ = ("hwInfo", "fileHash", "fileName", "version", "fileSize", "blockSize", "reportIntervalMin", "reportIntervalMax", "isPatch", "chopSize", "runVersion")
    HWINFO_FIELD_NUMBER: _ClassVar[int]
    FILEHASH_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FILESIZE_FIELD_NUMBER: _ClassVar[int]
    BLOCKSIZE_FIELD_NUMBER: _ClassVar[int]
    REPORTINTERVALMIN_FIELD_NUMBER: _ClassVar[int]
    REPORTINTERVALMAX_FIELD_NUMBER: _ClassVar[int]
    ISPATCH_FIELD_NUMBER: _ClassVar[int]
    CHOPSIZE_FIELD_NUMBER: _ClassVar[int]
    RUNVERSION_FIELD_NUMBER: _ClassVar[int]
    hwInfo: HardwareInfo
    fileHash: bytes
    fileName: str
    version: str
    fileSize: int
    blockSize: int
    reportIntervalMin: int
    reportIntervalMax: int
    isPatch: int
    chopSize: int
    runVersion: str
    def __init__(self, hwInfo: _Optional[_Union[HardwareInfo, _Mapping]] = ..., fileHash: _Optional[bytes] = ..., fileName: _Optional[str] = ..., version: _Optional[str] = ..., fileSize: _Optional[int] = ..., blockSize: _Optional[int] = ..., reportIntervalMin: _Optional[int] = ..., reportIntervalMax: _Optional[int] = ..., isPatch: _Optional[int] = ..., chopSize: _Optional[int] = ..., runVersion: _Optional[str] = ...) -> None: ...

class ImageBlock(_message.Message):
    __slots__ = ("fileHash", "blockNum", "blockData")
    FILEHASH_FIELD_NUMBER: _ClassVar[int]
    BLOCKNUM_FIELD_NUMBER: _ClassVar[int]
    BLOCKDATA_FIELD_NUMBER: _ClassVar[int]
    fileHash: bytes
    blockNum: int
    blockData: bytes
    def __init__(self, fileHash: _Optional[bytes] = ..., blockNum: _Optional[int] = ..., blockData: _Optional[bytes] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("fileHash", "loadTime")
    FILEHASH_FIELD_NUMBER: _ClassVar[int]
    LOADTIME_FIELD_NUMBER: _ClassVar[int]
    fileHash: bytes
    loadTime: int
    def __init__(self, fileHash: _Optional[bytes] = ..., loadTime: _Optional[int] = ...) -> None: ...

class HashRequest(_message.Message):
    __slots__ = ("fileHash",)
    FILEHASH_FIELD_NUMBER: _ClassVar[int]
    fileHash: bytes
    def __init__(self, fileHash: _Optional[bytes] = ...) -> None: ...

class FirmwareResponse(_message.Message):
    __slots__ = ("fileHash", "response", "loadTime")
    FILEHASH_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    LOADTIME_FIELD_NUMBER: _ClassVar[int]
    fileHash: bytes
    response: int
    loadTime: int
    def __init__(self, fileHash: _Optional[bytes] = ..., response: _Optional[int] = ..., loadTime: _Optional[int] = ...) -> None: ...

class FirmwareImageInfo(_message.Message):
    __slots__ = ("index", "fileHash", "fileName", "version", "fileSize", "blockSize", "bitmap", "isDefault", "isRunning", "loadTime", "hwInfo")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FILEHASH_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FILESIZE_FIELD_NUMBER: _ClassVar[int]
    BLOCKSIZE_FIELD_NUMBER: _ClassVar[int]
    BITMAP_FIELD_NUMBER: _ClassVar[int]
    ISDEFAULT_FIELD_NUMBER: _ClassVar[int]
    ISRUNNING_FIELD_NUMBER: _ClassVar[int]
    LOADTIME_FIELD_NUMBER: _ClassVar[int]
    HWINFO_FIELD_NUMBER: _ClassVar[int]
    index: int
    fileHash: bytes
    fileName: str
    version: str
    fileSize: int
    blockSize: int
    bitmap: bytes
    isDefault: bool
    isRunning: bool
    loadTime: int
    hwInfo: HardwareInfo
    def __init__(self, index: _Optional[int] = ..., fileHash: _Optional[bytes] = ..., fileName: _Optional[str] = ..., version: _Optional[str] = ..., fileSize: _Optional[int] = ..., blockSize: _Optional[int] = ..., bitmap: _Optional[bytes] = ..., isDefault: _Optional[bool] = ..., isRunning: _Optional[bool] = ..., loadTime: _Optional[int] = ..., hwInfo: _Optional[_Union[HardwareInfo, _Mapping]] = ...) -> None: ...

class SignatureValidity(_message.Message):
    __slots__ = ("notBefore", "notAfter")
    NOTBEFORE_FIELD_NUMBER: _ClassVar[int]
    NOTAFTER_FIELD_NUMBER: _ClassVar[int]
    notBefore: int
    notAfter: int
    def __init__(self, notBefore: _Optional[int] = ..., notAfter: _Optional[int] = ...) -> None: ...

class Signature(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    def __init__(self, value: _Optional[bytes] = ...) -> None: ...

class SignatureSettings(_message.Message):
    __slots__ = ("reqSignedPost", "reqValidCheckPost", "reqTimeSyncPost", "reqSecLocalPost", "reqSignedResp", "reqValidCheckResp", "reqTimeSyncResp", "reqSecLocalResp", "cert")
    REQSIGNEDPOST_FIELD_NUMBER: _ClassVar[int]
    REQVALIDCHECKPOST_FIELD_NUMBER: _ClassVar[int]
    REQTIMESYNCPOST_FIELD_NUMBER: _ClassVar[int]
    REQSECLOCALPOST_FIELD_NUMBER: _ClassVar[int]
    REQSIGNEDRESP_FIELD_NUMBER: _ClassVar[int]
    REQVALIDCHECKRESP_FIELD_NUMBER: _ClassVar[int]
    REQTIMESYNCRESP_FIELD_NUMBER: _ClassVar[int]
    REQSECLOCALRESP_FIELD_NUMBER: _ClassVar[int]
    CERT_FIELD_NUMBER: _ClassVar[int]
    reqSignedPost: bool
    reqValidCheckPost: bool
    reqTimeSyncPost: bool
    reqSecLocalPost: bool
    reqSignedResp: bool
    reqValidCheckResp: bool
    reqTimeSyncResp: bool
    reqSecLocalResp: bool
    cert: bytes
    def __init__(self, reqSignedPost: _Optional[bool] = ..., reqValidCheckPost: _Optional[bool] = ..., reqTimeSyncPost: _Optional[bool] = ..., reqSecLocalPost: _Optional[bool] = ..., reqSignedResp: _Optional[bool] = ..., reqValidCheckResp: _Optional[bool] = ..., reqTimeSyncResp: _Optional[bool] = ..., reqSecLocalResp: _Optional[bool] = ..., cert: _Optional[bytes] = ...) -> None: ...

class VendorTlv(_message.Message):
    __slots__ = ("subType", "value")
    SUBTYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    subType: int
    value: bytes
    def __init__(self, subType: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...
