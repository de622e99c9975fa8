"""The asyncio parts: engine, executor, links and devices, Gateway session, outbox, spool."""
