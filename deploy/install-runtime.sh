#!/bin/sh
# Create the production virtualenv: `sh deploy/install-runtime.sh VENV [WHEELHOUSE]`, run from the
# directory holding requirements.txt. The Dockerfile runs exactly this, and so does
# tests/deploy/test_production_install.py.
#
# With a WHEELHOUSE directory holding wheels (`make wheelhouse`), the install is air-gapped:
# `pip install --no-index --find-links WHEELHOUSE -r requirements.txt` reaches no network and fails
# loudly when a wheel is missing. Without one, pip installs from the package index. PYTHON names
# the interpreter (default python3).
set -eu
venv=$1
wheelhouse=${2:-}
"${PYTHON:-python3}" -m venv "$venv"
if [ -n "$wheelhouse" ] && ls "$wheelhouse"/*.whl >/dev/null 2>&1; then
    echo "install-runtime: offline, from the wheels in $wheelhouse"
    "$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --no-index --find-links "$wheelhouse" \
        -r requirements.txt
else
    echo "install-runtime: from the package index (no wheels in '${wheelhouse}')"
    "$venv/bin/pip" install --no-cache-dir --disable-pip-version-check -r requirements.txt
fi
