#!/usr/bin/env bash
# Installs what the console's browser tests run beside mailveil, from the npm registry at the
# versions in tests/console/oidc/package-lock.json: a real OpenID Connect provider
# (oidc-provider) and the axe-core accessibility engine. Only when the lock changed.
set -euo pipefail
dir="$(cd "$(dirname "$0")/.." && pwd)/tests/console/oidc"
stamp="$dir/node_modules/.installed"
if [ -f "$stamp" ] && [ "$stamp" -nt "$dir/package-lock.json" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm is needed for the console's browser tests" >&2; exit 1; }
echo "installing the console tests' node tools (oidc-provider, axe-core)"
npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
touch "$stamp"
