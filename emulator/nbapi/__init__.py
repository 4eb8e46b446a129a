"""The Firmware Upgrade NB API: FND's ``meshDeviceOps`` SOAP 1.1 service.

Layers: ``wsdl`` (service description, ``meshDeviceOps.wsdl``), ``soap``
(pure codec and dispatcher), ``auth`` (users, roles, Basic), ``app``
(aiohttp adapter), ``client`` (urllib client), ``schema_check`` and
``testing`` (test helpers). See ``shared/reference/NBAPI.md``.
"""
