"""Channels (web chat, Telegram, third-party connectors). Not built yet: see the issue tracker."""
