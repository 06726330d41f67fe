#!/bin/sh
# The Arduino IDE and arduino-cli compile what is inside the sketch folder (src/ included),
# not files beside it: copy the shared CBOR code there. Run it again after changing ../common.
set -e
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/kuzzle_sensor/src/common"
for f in kcbor.h kcbor.c kuzzle_iot.h kuzzle_iot.c; do
  cp "$here/../common/$f" "$here/kuzzle_sensor/src/common/$f"
done
echo "copied kcbor and kuzzle_iot into kuzzle_sensor/src/common/"
