#!/usr/bin/env bash
# Seeds each fuzz target's corpus with valid messages from the golden test data.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/envelope corpus/frame_stream corpus/announcement corpus/rotation_certificate corpus/persisted corpus/sealed
cp ../schema/testdata/delta_envelope_v1.frame corpus/envelope/golden
printf '\x40' | cat - ../schema/testdata/delta_envelope_v1.frame > corpus/frame_stream/golden
cp ../schema/testdata/announcement_v1.bin corpus/announcement/golden
