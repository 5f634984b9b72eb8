#!/usr/bin/env bash
# NetApp's own ONTAP client as the simulator's conformance suite: the oldest and the newest
# supported release of `netapp-ontap` (PyPI), each in a virtualenv cached outside the checkout
# (~/.cache/drover/pcl/VERSION), each against the simulator emulating that release.
#
#   tests/ontap_conformance/run.sh            # needs target/debug/drover (cargo build)
#
# The releases are the ends of the supported range (plugins/ontap/src/release.rs, docs/ontap.md).
set -euo pipefail
cd "$(dirname "$0")"
export DROVER_BIN=${DROVER_BIN:-$(cd ../.. && pwd)/target/debug/drover}
[ -x "$DROVER_BIN" ] || { echo "no drover binary at $DROVER_BIN: run cargo build first" >&2; exit 1; }
cache=${DROVER_PCL_CACHE:-$HOME/.cache/drover/pcl}
for version in 9.10.1.0 9.19.1.0; do
  venv="$cache/$version"
  if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c "import netapp_ontap" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    # marshmallow 4 dropped the string references older clients' schemas use.
    "$venv/bin/pip" install --quiet --disable-pip-version-check "netapp-ontap==$version" 'marshmallow<4' pytest
  fi
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning .
done
