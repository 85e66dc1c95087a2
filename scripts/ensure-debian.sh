#!/usr/bin/env bash
# Installs the Debian packages the tests need, only those missing, so repeat runs cost nothing.
# postfix is the relay tests' smarthost (each test run starts its own private instance; the
# system instance is never configured or started); systemd gives `systemd-analyze verify`
# for the shipped units; swaks is an SMTP client the tests drive;
# chromium is the headless browser the console's tests drive (Playwright, executable_path)
# and nodejs/npm run the OpenID Connect provider they sign in through. Pango (with HarfBuzz's
# subsetter) and the DejaVu fonts are what WeasyPrint renders the regulator report's PDF with.
# postgresql-client brings pg_dump/pg_restore, which `mailveil backup`/`restore` run; softhsm2 is
# the PKCS#11 token the key-store tests keep the KEKs and the ledger key in.
set -euo pipefail
packages=(sqlite3 systemd postfix swaks chromium fonts-dejavu-core libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 postgresql-client softhsm2)
command -v node >/dev/null || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Without this answer postfix's installer asks which mail set-up to write.
printf '%s\n' \
  'postfix postfix/main_mailer_type select No configuration' \
  'postfix postfix/mailname string localhost' | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
