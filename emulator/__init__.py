"""meshfleet: a CSMP (CG-mesh) device fleet and an FND-style firmware head-end.

Layers, bottom up (each folder one layer; the lower ones never touch a socket
or a clock):

- ``csmp``: TLV framing, protobuf schema, typed values, payload signing
- ``coap``: CoAP message codec and the sans-IO exchange layer (RFC 7252)
- ``firmware``: FND image file format, block store
- ``node``: one emulated CG-mesh device (sans-IO, ``now`` passed in)
- ``fleet``: asyncio runtime for thousands of devices
- ``headend``: the NMS endpoint and the six Firmware Upgrade operations
- ``nbapi``: the SOAP front of those operations, and its client
- ``cli``: the ``meshfleet`` command
"""

__version__ = "0.1.0"
