#!/usr/bin/env bash
# The README's screenshots (docs/img/ui-*.png), from the README's own default run: `search launch`,
# `search retrain` and `search evaluate` with their defaults on the bundled digits, in a fresh folder;
# then the browser tests (tests/test_browser.py) against that store, saving into docs/img.
# Needs the test extra and Chromium (see .ci/run). About 5 minutes on 2 cores.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
run="$(mktemp -d -t search-readme-run-XXXX)"
(cd "$run" && search launch -q && search retrain -q && search evaluate -q) | tee "$run/output.txt"
SEARCH_BROWSER_STORE="$run" SEARCH_SCREENSHOT_DIR="$repo/docs/img" \
    pytest -q -p no:cacheprovider -m browser "$repo/tests/test_browser.py"
echo "screenshots from the run in $run written to $repo/docs/img"
