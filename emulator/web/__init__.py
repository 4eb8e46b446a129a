"""The live page of the fleet and its upgrades, and its JSON status API.

:mod:`~emulator.web.feed` (what the head-end reports as it happens),
:mod:`~emulator.web.status` (the :class:`StatusSource` contract the head-end
implements), :mod:`~emulator.web.app` (aiohttp routes and the page in
``static/``), :mod:`~emulator.web.demo_source` (an in-memory source) and
:mod:`~emulator.web.browser` (headless Chromium for tests and screenshots).
"""
