#!/usr/bin/env bash
# Set up (if needed), import the shipped demo help centre and answer a few customer questions.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
BOTKIT=.venv/bin/botkit
echo "== importing the Tallow & Pine help centre (demo/kb) =="
$BOTKIT --project demo kb import
$BOTKIT --project demo kb status
for q in "my parcel still hasn't arrived, what now?" \
         "checkout says PAY-409, was I charged twice?" \
         "what's the capital of Australia?"; do
  echo
  echo "== customer: $q"
  $BOTKIT --project demo kb search "$q" --k 3
done
echo
echo "== how good is retrieval on the demo's labelled questions? =="
$BOTKIT --project demo eval retrieval --queries demo/eval/queries.jsonl
