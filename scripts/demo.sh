#!/usr/bin/env bash
# Set up (if needed), import the shipped demo help centre, and talk to the demo bot:
# answers with sources, a follow-up read in context, a hand-off to a human and back.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
BOTKIT=.venv/bin/botkit
say() { printf '\n== %s\n' "$*"; }

say "importing the Tallow & Pine help centre (demo/kb)"
$BOTKIT --project demo kb import

CONV="demo-$(date +%s)"
say "customer: my parcel still hasn't arrived, what now?"
$BOTKIT --project demo ask --conversation "$CONV" "my parcel still hasn't arrived, what now?"
say "customer: and how long do I have to report it?   (a follow-up, read with the question before)"
$BOTKIT --project demo ask --conversation "$CONV" "and how long do I have to report it?"
say "customer: this is not helping, can I talk to a real person?"
$BOTKIT --project demo ask --conversation "$CONV" "this is not helping, can I talk to a real person?"
say "the agents' queue"
$BOTKIT --project demo handoffs
say "agent alice takes it, replies, and hands it back to the bot"
$BOTKIT --project demo agent take "$CONV" --agent alice
$BOTKIT --project demo agent say "$CONV" "Hi, I'm Alice. I've opened a carrier trace for you." --agent alice
$BOTKIT --project demo agent return "$CONV" --agent alice
say "customer (back with the bot): can I pay with PayPal?"
$BOTKIT --project demo ask --conversation "$CONV" "can I pay with PayPal?"

say "conversation tests (demo/tests/conversations.yaml)"
$BOTKIT --project demo test demo/tests/conversations.yaml
say "retrieval on the demo's labelled questions"
$BOTKIT --project demo eval retrieval --queries demo/eval/queries.jsonl | head -15
say "chat yourself: .venv/bin/botkit --project demo shell"
