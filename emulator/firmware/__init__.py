"""Layer ``firmware``: the FND TPD image format, the CSMP block bitmap and the
block store shared by every emulated device (CSMP.md, "Firmware file format"
and "Firmware slots and response codes").

- :mod:`.image`: parse, build, check and sign image files
- :mod:`.bitmap`: the TLV 75 block bitmap, MSB first
- :mod:`.blockstore`: image blocks stored once, shared by all devices
"""
