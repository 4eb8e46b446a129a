"""Thin asyncio edges: UDP sockets and the one timer (the only I/O layer)."""
