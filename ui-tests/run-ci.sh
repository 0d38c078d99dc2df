#!/usr/bin/env bash
# UI tests of the JupyterLab extension: Galata driving Debian's Chromium against real Jupyter
# servers that playwright.config.js starts on free ports: one at the root URL, one under the
# base URL /jm/, one without the server extension.
#
# Needs jupyter_mage installed (`pip install .`, which builds the labextension) and jlpm
# (from jupyterlab). Screenshots land in ui-tests/screenshots/ (git-ignored); their paths are
# printed. With MAGE_UPDATE_DOCS_SCREENSHOTS=1 they are also copied to docs/screenshots/.
set -euo pipefail
cd "$(dirname "$0")"

chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
    echo "ui-tests: installing Debian's chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
"$chromium" --version

if ! jupyter labextension list 2>&1 | grep -q "jupyter-mage.*OK"; then
    echo "ui-tests: the jupyter-mage labextension is not installed (pip install . first)" >&2
    jupyter labextension list >&2 || true
    exit 1
fi

jlpm install > jlpm-install.log 2>&1 || { cat jlpm-install.log; exit 1; }

rm -rf screenshots
status=0
jlpm playwright test || status=$?
if [ "$status" -ne 0 ]; then
    for log in server-*.log; do
        [ -f "$log" ] && { echo "--- last lines of ui-tests/$log"; tail -n 60 "$log"; }
    done
fi
echo "ui-tests: screenshots:"
ls -1 "$PWD"/screenshots/*.png 2>/dev/null || echo "  (none)"
exit "$status"
