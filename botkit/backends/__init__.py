"""Backends past one process: stores and buses on servers that several workers share
(PostgreSQL, Redis). A layer of its own between the lower layers and the app: these modules
import their drivers (asyncpg, psycopg, redis) at the top, so nothing in the core, knowledge,
training or connectors imports them (they may import those layers, whose SQLite stores they
twin); the app
(``botkit/app/compose.py``) picks one when ``storage:`` or the environment asks for it.
"""
