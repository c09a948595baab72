#!/bin/sh
# Install maild as a system service (docs/admin.md, "Install"): the maild user
# (sysusers.d), /etc/maild (root:maild 0750) with maild.toml (0640) taken from
# the example with absolute paths under /var/lib/maild, /var/lib/maild
# (maild:maild 0750), and the systemd units. Run as root from the source tree,
# after installing maild itself (e.g. into /opt/maild):
#
#     sh systemd/install.sh
#
# Nothing that exists is overwritten except the units. Variables:
#   MAILD    the maild program (default /opt/maild/bin/maild)
#   DESTDIR  install into this root instead of / (packaging, the install test)
set -eu

MAILD=${MAILD:-/opt/maild/bin/maild}
DESTDIR=${DESTDIR:-}
SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${DESTDIR:-/}

say() { printf 'maild install: %s\n' "$*"; }

# 1. The user and group, from sysusers.d (also created at boot if missing).
install -d -m 755 "$DESTDIR/etc/sysusers.d"
install -m 644 "$SRC/systemd/maild.sysusers" "$DESTDIR/etc/sysusers.d/maild.conf"
systemd-sysusers --root="$ROOT" "$DESTDIR/etc/sysusers.d/maild.conf"
# Numeric ids from the passwd file of that root: DESTDIR's user may not exist here.
uid=$(awk -F: '$1 == "maild" { print $3 }' "$DESTDIR/etc/passwd")
gid=$(awk -F: '$1 == "maild" { print $3 }' "$DESTDIR/etc/group")
[ -n "$uid" ] && [ -n "$gid" ] || { say "no maild user after systemd-sysusers"; exit 1; }

# 2. Configuration: readable by the maild group, writable by root only. Put
# secrets (relay and IMAP passwords, the TLS key) beside it, root:maild 0640.
install -d -m 750 -o 0 -g "$gid" "$DESTDIR/etc/maild"
if [ -e "$DESTDIR/etc/maild/maild.toml" ]; then
    say "keeping the existing $DESTDIR/etc/maild/maild.toml"
else
    sed -e 's|^url = "sqlite:///var/maild.db"|url = "sqlite:////var/lib/maild/maild.db"|' \
        -e 's|^secret_file = "var/secret.key"|secret_file = "/var/lib/maild/secret.key"|' \
        -e 's|^maildir = "var/outgoing"|maildir = "/var/lib/maild/outgoing"|' \
        "$SRC/config/maild.example.toml" > "$DESTDIR/etc/maild/maild.toml.new"
    chown 0:"$gid" "$DESTDIR/etc/maild/maild.toml.new"
    chmod 640 "$DESTDIR/etc/maild/maild.toml.new"
    mv "$DESTDIR/etc/maild/maild.toml.new" "$DESTDIR/etc/maild/maild.toml"
    say "wrote $DESTDIR/etc/maild/maild.toml: edit helpdesk.addresses and the rest"
fi

# 3. State: the database, the signing secret, the outgoing Maildir.
install -d -m 750 -o "$uid" -g "$gid" "$DESTDIR/var/lib/maild"

# 4. The units, pointing at this maild.
install -d -m 755 "$DESTDIR/etc/systemd/system"
for unit in maild.service maild.socket; do
    sed "s|/opt/maild/bin/maild|$MAILD|g" "$SRC/systemd/$unit" > "$DESTDIR/etc/systemd/system/$unit"
    chmod 644 "$DESTDIR/etc/systemd/system/$unit"
done
say "installed; next: edit /etc/maild/maild.toml, then"
say "  runuser -u maild -- $MAILD check-config && systemctl daemon-reload && systemctl enable --now maild"
