"""Backends past one process: stores and buses on servers that several workers share
(PostgreSQL, Redis). A layer of its own between the core and the app: these modules import
their drivers (asyncpg, redis) at the top, so nothing in the core imports them; the app
(``botkit/app/compose.py``) picks one when ``storage:`` or the environment asks for it.
"""
