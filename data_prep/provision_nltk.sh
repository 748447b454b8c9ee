#!/usr/bin/env bash
# Provision WordNet 3.0 for NLTK without NLTK's downloader (its server is unreachable offline).
# Installs the Debian packages wordnet-base + wordnet-sense-index (as root), or unpacks them without
# root (apt-get download + dpkg -x), then copies the database into <venv>/nltk_data/corpora/wordnet
# with a generated lexnames file: `python -m osdpm_lib.priors provision-wordnet` (idempotent).
# Usage: data_prep/provision_nltk.sh [PYTHON]     (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
PKGS=(wordnet-base wordnet-sense-index)

if [ -f /usr/share/wordnet/index.noun ] && [ -f /usr/share/wordnet/index.sense ]; then
  exec "$PY" -m osdpm_lib.priors provision-wordnet
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${PKGS[@]}" \
    || { apt-get update && apt-get install -y --no-install-recommends "${PKGS[@]}"; }
  exec "$PY" -m osdpm_lib.priors provision-wordnet
fi
if command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if (cd "$tmp" && apt-get download "${PKGS[@]}"); then
    for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$tmp/root"; done
    "$PY" -m osdpm_lib.priors provision-wordnet --source "$tmp/root/usr/share/wordnet"
    exit 0
  fi
fi
# no apt: nltk.download('wordnet') where the internet is reachable, else an error naming the packages
exec "$PY" -m osdpm_lib.priors provision-wordnet
