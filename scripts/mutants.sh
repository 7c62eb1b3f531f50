#!/usr/bin/env bash
# Checks that important tests can fail: for each entry below, applies a one-line change of
# behaviour (a plausible defect), runs the test that must catch it, and restores the file.
# Prints "caught" or "MISSED" per entry and exits non-zero if any was missed or if the file was
# not restored. Needs the local stack (`make stack-up`); it is not part of `make test` (each entry
# rebuilds the worker). Usage: bash scripts/mutants.sh [entry-number ...]
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/py/bin:$PATH"

# file | the line's text now | the defect | test selection (cargo nextest run --release ...)
entries=(
  "src/app/recall.rs|Some(_) if *announced => *outcome = Outcome::Announced,|Some(row) if *announced => *outcome = self.announce_again(row),|--test end_to_end rereading_the_topic_with_a_new_group_changes_nothing"
  "src/codec/registry.rs|Some(code) => CodecError::RegistryUnavailable(format!(\"{} (error code {code})\", error.error)),|Some(_) => CodecError::UnknownSchema(id),|--test registry_faults"
  "src/domain/event_time.rs|if event_time > processed_at + self.max_future \|\| event_time < processed_at - self.max_past {|if event_time > processed_at + self.max_future {|--test event_time"
  "src/codec/sealed.rs|let nonce: [u8; NONCE] = rand::random();|let nonce = [0u8; NONCE];|--lib codec::sealed::tests::seals_open_on_their_own_row_only"
  "src/app/isolate.rs|if let Ok(outcomes) = catch_unwind(AssertUnwindSafe(\|\| process(records))) {|if let Ok(outcomes) = Ok::<_, ()>(process(records)) {|--lib app::isolate::tests::a_poison_record_costs_only_itself"
  "src/sources/assignment.rs|matches!(self.lock().1.get(\&partition), Some(State::Claimed(claim)) if claim.epoch == epoch)|matches!(self.lock().1.get(\&partition), Some(State::Claimed(_)))|--lib sources::assignment::tests::claims_follow_assignment_epochs"
)

# Splits on '|' not preceded by a backslash, then unescapes.
field() { python3 -c 'import re,sys; print(re.split(r"(?<!\\)\|", sys.argv[1])[int(sys.argv[2])].replace("\\|","|").replace("\\&","&"))' "$1" "$2"; }

selected=("$@")
[ ${#selected[@]} -eq 0 ] && selected=($(seq 1 ${#entries[@]}))
missed=0
for number in "${selected[@]}"; do
  entry=${entries[$((number - 1))]}
  file=$(field "$entry" 0); from=$(field "$entry" 1); to=$(field "$entry" 2); selection=$(field "$entry" 3)
  if [ -n "$(git status --porcelain -- "$file")" ]; then
    echo "mutant $number: $file has uncommitted changes; commit or stash them first" >&2
    exit 2
  fi
  if ! FROM="$from" TO="$to" python3 - "$file" <<'EOF'
import os, sys
path = sys.argv[1]
text = open(path).read()
if text.count(os.environ["FROM"]) != 1:
    sys.exit(f"{path}: the line to change is not there exactly once")
open(path, "w").write(text.replace(os.environ["FROM"], os.environ["TO"]))
EOF
  then missed=1; continue; fi
  log="target/mutants/$number.log"
  mkdir -p target/mutants
  echo "mutant $number: $file: $to"
  # shellcheck disable=SC2086
  if cargo nextest run --release --no-fail-fast $selection > "$log" 2>&1; then
    echo "  MISSED: $selection passed (log $log)"
    missed=1
  elif grep -q "could not compile" "$log"; then
    echo "  DID NOT BUILD (log $log)"
    missed=1
  else
    failed=$(grep -E "^\s+(FAIL|TIMEOUT|SIGABRT)" "$log" | sort -u | head -3 | sed "s/^ */    /")
    echo "  caught by $selection"
    [ -n "$failed" ] && echo "$failed"
  fi
  git checkout -- "$file"
done
git diff --quiet -- src || { echo "src was not restored" >&2; exit 2; }
exit $missed
