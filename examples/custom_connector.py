"""A new channel, found by name: an in-memory queue connector talking to a real Engine.

Shows the three parts of docs/connectors.md: the Connector protocol (start, stop, send), the
``create(ctx)`` factory that validates its ``channels.<name>`` section, and registration in the
``botkit.connectors`` entry-point group, which ``botkit serve`` (``build_app``) looks names up in.
The bot answers, a customer asks for a human, and an agent's reply reaches the customer by send().
Knowledge: botkit.testing's StaticRetriever stands in for the knowledge base, so nothing is
downloaded; the real one: ``engine = botkit.app.compose.build_engine(project)``. The
conversations go to the real SQLite store.   Run: python examples/custom_connector.py
"""
import asyncio
import sys
import tempfile
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel

from botkit.app.server import CONNECTORS, build_app
from botkit.config import BotConfig
from botkit.engine import Engine
from botkit.escalation import build_rules
from botkit.project import Project
from botkit.responders import ExtractiveResponder
from botkit.store import SQLiteConversationStore
from botkit.testing import StaticRetriever, hit
from botkit.types import Conversation, IncomingMessage
from connectors.base import ConnectorContext, OutgoingMessage, as_text, factory, validate_section


class QueueConfig(BaseModel):  # the channel's section of bot.yaml, validated by the connector
    agent_prefix: str = "[agent]"


class QueueConnector:
    """Customers are lines put on ``inbox``; everything they are shown lands in ``shown``."""

    def __init__(self, ctx: ConnectorContext) -> None:  # ctx.app: add HTTP routes here if needed
        self.name, self.engine = ctx.name, ctx.engine
        self.config: QueueConfig = validate_section(ctx.name, QueueConfig, ctx.config)
        self.inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.shown: list[str] = []

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:  # let in-flight messages finish
        await self.inbox.join()
        self._task.cancel()

    async def _run(self) -> None:  # inbound: one line at a time, to the engine
        while True:
            customer, text = await self.inbox.get()
            msg = IncomingMessage(f"{self.name}:{customer}", text, channel=self.name, customer_id=customer)
            reply = await self.engine.handle(msg)
            if reply.action != "handoff":  # "handoff": a human has the conversation, the bot is silent
                self.shown.append(f"{customer} <- bot: {reply.text}")
            self.inbox.task_done()

    async def send(self, conversation: Conversation, message: OutgoingMessage) -> None:  # outbound
        prefix = self.config.agent_prefix if message.kind == "agent" else f"[{message.kind}]"
        self.shown.append(f"{conversation.customer_id} <- {prefix} {as_text(message)}")


def create(ctx: ConnectorContext) -> QueueConnector:  # the factory the entry point names
    return QueueConnector(ctx)


async def main(tmp: Path) -> None:
    # What `pip install` of a package declaring `queue = "botkit_queue:create"` writes:
    dist = tmp / "site" / "botkit_queue-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: botkit-queue\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[botkit.connectors]\nqueue = __main__:create\n")  # module:factory
    sys.path.insert(0, str(dist.parent))
    assert factory("queue") is create, "entry point not found"

    project = Project(tmp, BotConfig(channels={"queue": {"agent_prefix": "[Sam]"}}))  # as bot.yaml would say
    retriever = StaticRetriever(
        {"How do I reset my password?": [hit("reset", "Click 'Forgot password' on the sign-in page.")]})
    engine = Engine(retriever=retriever, responder=ExtractiveResponder(), store=SQLiteConversationStore(
        tmp / "conversations.sqlite3"), rules=build_rules(project.config.escalation))
    runner = web.AppRunner(build_app(project, engine))  # creates channels by name, starts them
    await runner.setup()
    channel: QueueConnector = runner.app[CONNECTORS]["queue"]
    channel.inbox.put_nowait(("ann", "How do I reset my password?"))
    channel.inbox.put_nowait(("ann", "I want to talk to a human"))
    await channel.inbox.join()
    await engine.take("queue:ann", "Sam")
    await engine.agent_message("queue:ann", "Sam", "Hi Ann, I'm on it.")
    await runner.cleanup()
    print("\n".join(channel.shown))
    assert channel.shown[0] == "ann <- bot: Click 'Forgot password' on the sign-in page.", channel.shown
    assert channel.shown[1].startswith("ann <- bot: I'm passing you to a member of our team"), channel.shown
    assert channel.shown[-1] == "ann <- [Sam] Hi Ann, I'm on it.", channel.shown
    print("OK: queue connector found by name, answered, handed off, delivered the agent's message")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
